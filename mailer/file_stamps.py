"""Whether an event's files are the ones planned last, from their metadata alone.

A start compares every event file with the version planned last (SPEC §5.1). Reading and
parsing 10,000 event files and their CSVs to learn that nothing changed took seconds
(issue 18); a file's size, times and inode, as the kernel keeps them, say the same in
microseconds. A stamp, kept with the version in the store, is that metadata for every file
the version was read from (the event file, its CSV, its attachments), and the digest of
their content.

Trusted only where the kernel's clock makes it safe, as git's index does: any write to a
file sets its ctime to the time of that write, and nobody can set a ctime back. A stamp
is made only if every file's ctime was already SETTLED_NS old when reading began; a write
after that gives a newer ctime, so the stamp no longer matches and the files are read
again. A file written just before it was read (a copy still in progress, two saves within a
tick of the clock) gets no stamp and is read at every start until it is planned again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

# How old a file's last change must be when reading starts for its metadata to name its
# content: well past the kernel's timestamp tick, and a clock stepped back a little.
SETTLED_NS = 2_000_000_000


def stamp(digest: str, source: Path, paths: Iterable[Path], *, read_from_ns: int) -> str | None:
    """The stamp of an event file's version (JSON), or None if a file changed too recently
    (or vanished) to say so by its metadata. `paths`: the files besides `source` it was
    read from, inside its folder; `read_from_ns`: `time.time_ns()` before the first read."""
    folder = source.parent
    files = []
    for path in (source, *paths):
        try:
            facts = os.stat(path)
        except OSError:
            return None
        if facts.st_ctime_ns > read_from_ns - SETTLED_NS:
            return None
        files.append([os.path.relpath(path, folder), *_metadata(facts)])
    return json.dumps({"digest": digest, "files": files})


def stamped_digest(stamp_json: str | None, source: Path) -> str | None:
    """The content digest a stamp records, if every file it names still has the metadata
    it had; else None (read the files)."""
    if stamp_json is None:
        return None
    try:
        stamped = json.loads(stamp_json)
        for name, *metadata in stamped["files"]:
            if _metadata(os.stat(source.parent / name)) != metadata:
                return None
        return str(stamped["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _metadata(facts: os.stat_result) -> list[int]:
    """What changes with any write, rename over or replacement of a file."""
    return [facts.st_size, facts.st_mtime_ns, facts.st_ctime_ns, facts.st_ino, facts.st_dev]
