"""Paths that may be local or `gs://`, through Beam's FileSystems.

TensorFlow's own `gs://` file system ignores `STORAGE_EMULATOR_HOST` (and its
plugin breaks `import tensorflow` on 2.21), so every stage moves bytes with
Beam's FileSystems, which is built on google-cloud-storage and honours the
emulator, and hands TensorFlow only local paths.
"""
from __future__ import annotations

import os
import posixpath
import shutil
from typing import List

from apache_beam.internal.gcp import auth as beam_gcp_auth
from apache_beam.io.filesystems import FileSystems


def _skip_credential_lookup_for_emulator() -> None:
    """Against a GCS emulator, connect anonymously at once.

    Without credentials Beam retries Application Default Credentials with
    exponential backoff (about 30 s per process) before falling back to an
    anonymous client; an emulator needs none, so say so up front.
    """
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        beam_gcp_auth._Credentials._credentials = None
        beam_gcp_auth._Credentials._credentials_init = True


_skip_credential_lookup_for_emulator()


def is_remote(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file, creating local parent folders as needed."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with FileSystems.create(path) as handle:
        handle.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def match(pattern: str) -> List[str]:
    """Sorted paths matching a glob (`*`, `**`); empty when nothing matches."""
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def list_folder(folder: str) -> List[str]:
    """Every file below `folder`, recursively, sorted."""
    return match(join(folder, "**")) if is_remote(folder) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)


def copy_folder_to_local(source: str, local_dir: str) -> str:
    """Makes a local copy of a folder (a no-op that returns `source` when it is already local)."""
    if not is_remote(source):
        return source
    prefix = source.rstrip("/") + "/"
    for path in list_folder(source):
        target = os.path.join(local_dir, path[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return local_dir


def copy_folder_from_local(local_dir: str, target: str) -> None:
    """Copies every file below `local_dir` to `target`, local or remote, keeping relative paths."""
    for root, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, local_dir).replace(os.sep, "/")
            destination = join(target, relative)
            if not is_remote(destination):
                os.makedirs(os.path.dirname(destination), exist_ok=True)
            with open(path, "rb") as src, FileSystems.create(destination) as dst:
                shutil.copyfileobj(src, dst)
