# mailer as a container: docs/operator-guide.md, "Install with Docker".
#
#   docker build -t mailer .
#   docker run -d --name mailer --stop-timeout 30 \
#     -v "$PWD/config.toml:/config/config.toml:ro" \
#     -v mailer-data:/data -v "$PWD/schedules:/schedules:ro" \
#     -e MAILER_SMTP_PASSWORD mailer
#
# The configuration is a mounted file; deploy/config.docker.toml is one with the image's paths.
FROM python:3.11-slim

# Logs go to stderr unbuffered, where `docker logs` reads them; no .pyc files in the image.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MAILER_CONFIG=/config/config.toml

# A fixed uid/gid, so that bind-mounted folders can be given to it on the host.
RUN groupadd --system --gid 10001 mailer \
 && useradd --system --uid 10001 --gid mailer --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin mailer

# Only what the package is built from (pyproject.toml names README.md as its readme).
COPY pyproject.toml README.md /tmp/mailer-src/
COPY mailer /tmp/mailer-src/mailer
RUN pip install --no-cache-dir /tmp/mailer-src \
 && rm -rf /tmp/mailer-src

# The templates are not part of the Python package; the config names this folder.
COPY templates /app/templates

# /data: the database (mailer.sqlite3 with its -wal and -shm) and a Maildir, if used.
# /schedules: the event files. Both owned by mailer, so named volumes start out writable.
RUN mkdir -p /data /schedules /config \
 && chown mailer:mailer /data /schedules
VOLUME ["/data", "/schedules"]

USER 10001:10001
WORKDIR /data

# SIGTERM (docker stop) lets sends in flight finish within [sending] shutdown_grace;
# give `docker stop` more than that (-t 30, or --stop-timeout 30 at docker run).
STOPSIGNAL SIGTERM
# /healthz ([web] listen, 127.0.0.1:8025 by default: inside the container, so no login is
# needed): 200 while the loop answers and the database does. No curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8025/healthz', timeout=4)"]
ENTRYPOINT ["mailer"]
CMD ["run", "-c", "/config/config.toml"]
