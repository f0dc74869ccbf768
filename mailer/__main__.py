"""`python -m mailer` is the `mailer` command. Guarded: a worker process of multiprocessing
may import the main module as `__mp_main__`, and must not run the command again."""

from mailer.cli import main

if __name__ == "__main__":
    main()
