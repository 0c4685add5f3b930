"""Paths that may be local or `gs://`, through Beam's FileSystems.

TensorFlow's own `gs://` file system ignores `STORAGE_EMULATOR_HOST` (and its
plugin breaks `import tensorflow` on 2.21), so every stage moves bytes with
Beam's FileSystems, which is built on google-cloud-storage and honours the
emulator, and hands TensorFlow only local paths.

Beam and google-cloud-storage are imported on first use (about 0.9 s on 2 cores): a command that only reads
local files by name (`captioner.caption photo.jpg`) reads them with `open` and never pays for them.
"""
from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import shutil
import socket
import time
from typing import Iterable, List
from urllib.parse import urlparse

from captioner.errors import InputError, OutputError, StorageUnreachable

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
GCS_ENDPOINT = "https://storage.googleapis.com"
REACH_SECONDS = 30  # how long `check_reachable` keeps trying an endpoint that does not answer


def _skip_credential_lookup_for_emulator() -> None:
    """Against a GCS emulator, connect anonymously at once.

    Without credentials Beam retries Application Default Credentials with
    exponential backoff (about 30 s per process) before falling back to an
    anonymous client; an emulator needs none, so say so up front.
    """
    if os.environ.get(EMULATOR_ENV):
        from apache_beam.internal.gcp import auth as beam_gcp_auth
        beam_gcp_auth._Credentials._credentials = None
        beam_gcp_auth._Credentials._credentials_init = True


_skip_credential_lookup_for_emulator()  # here, not on first use: Beam's own reads of gs:// need it too


@functools.cache
def _file_systems():
    """Beam's FileSystems, imported on first use."""
    from apache_beam.io.filesystems import FileSystems
    return FileSystems


def _open(path: str):
    """A binary reader: `open` for a local path, Beam's FileSystems for gs://."""
    return _file_systems().open(path) if is_remote(path) else open(path, "rb")


def is_remote(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    return _file_systems().exists(path) if is_remote(path) else os.path.exists(path)


def read_bytes(path: str) -> bytes:
    try:
        with _open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the path (local, or gs://bucket/...)") from None


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def check_folder(path: str, flag: str) -> None:
    """Refuses a local `flag` PATH that exists as something other than a folder (a file where a folder goes)."""
    if not is_remote(path) and os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{flag} {path} is a file, not a folder; give a folder path (it is created if missing)")


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file, creating local parent folders as needed."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _file_systems().create(path) as handle:
        handle.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def match(pattern: str) -> List[str]:
    """Sorted paths matching a glob (`*`, `**`); empty when nothing matches."""
    results = _file_systems().match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def first_match(pattern: str) -> str:
    """The first path a pattern (or plain path) matches, listing at most one: cheap on a 10M-object bucket."""
    if not is_remote(pattern) and os.path.isdir(pattern):
        raise InputError(f"{pattern} is a folder; give a file, or a glob of the files in it such as "
                         f"'{join(pattern, '*')}' (or '{join(pattern, '**')}' for every sub-folder too)")
    found = _file_systems().match([pattern], limits=[1])[0].metadata_list
    if not found:
        raise InputError(f"{pattern} matches no file; {_no_match_hint(pattern)}")
    return found[0].path


def _no_match_hint(pattern: str) -> str:
    """What most likely went wrong with a pattern that matches nothing."""
    if pattern.startswith("~"):
        return (f"'~' is not expanded inside quotes: write it as {os.path.expanduser(pattern.split('/')[0])}/... "
                "or leave the '~' outside the quotes (~/'photos/*.jpg')")
    if "[" in pattern or "]" in pattern:
        return ("'[' and ']' are glob characters (a set of characters): in a folder or file name write them as "
                "'[[]' and '[]]', e.g. 'data[[]1[]]/*.jpg' for data[1]/*.jpg")
    return "check the path and the glob ('*' within a folder, '**' across folders)"


def list_folder(folder: str) -> List[str]:
    """Every file below `folder`, recursively, sorted."""
    return match(join(folder, "**")) if is_remote(folder) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)


def file_sha256(path: str) -> str:
    """sha256 of a file, local or gs://, read in chunks."""
    digest = hashlib.sha256()
    with _open(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_file(source: str, target: str) -> None:
    """Copies one file (local or gs://) to a local path, streaming, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with _open(source) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def copy_folder_to_local(source: str, local_dir: str) -> str:
    """Makes a local copy of a folder (a no-op that returns `source` when it is already local)."""
    if not is_remote(source):
        return source
    prefix = source.rstrip("/") + "/"
    for path in list_folder(source):
        target = os.path.join(local_dir, path[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with _open(path) as src, open(target, "wb") as dst:
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
            with open(path, "rb") as src, _file_systems().create(destination) as dst:
                shutil.copyfileobj(src, dst)


def _endpoint() -> str:
    return os.environ.get(EMULATOR_ENV) or GCS_ENDPOINT


def _connects(endpoint: str) -> bool:
    url = urlparse(endpoint if "://" in endpoint else "http://" + endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=5):
            return True
    except OSError:
        return False


def check_reachable(paths: Iterable[str]) -> None:
    """Fails fast, naming the path and the endpoint, when storage for any gs:// path does not answer.

    Beam's and google-cloud-storage's own retries go on for minutes against an
    endpoint that refuses or drops connections; this tries for REACH_SECONDS, then
    says what to check. Each bucket must exist (a mistyped bucket fails here too).
    """
    buckets = sorted({urlparse(path).netloc: path for path in paths if path and path.startswith("gs://")}.items())
    if not buckets:
        return
    endpoint, deadline = _endpoint(), time.time() + REACH_SECONDS
    while not _connects(endpoint):
        if time.time() > deadline:
            raise StorageUnreachable(
                f"cannot reach the storage endpoint {endpoint} for {buckets[0][1]} (tried for {REACH_SECONDS} s); "
                f"check the network, or {EMULATOR_ENV} when you use an emulator"
                f"{' (it is set to ' + os.environ[EMULATOR_ENV] + ')' if os.environ.get(EMULATOR_ENV) else ''}")
        time.sleep(2)
    from google.api_core import exceptions, retry
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage as gcs
    try:
        if os.environ.get(EMULATOR_ENV):
            client = gcs.Client(project="emulator", credentials=AnonymousCredentials())
        else:
            client = gcs.Client()
        for bucket, path in buckets:
            if not client.bucket(bucket).exists(timeout=10, retry=retry.Retry(deadline=REACH_SECONDS)):
                raise InputError(f"bucket gs://{bucket} (of {path}) does not exist; check its name, or create it "
                                 "(gcloud storage buckets create)")
    except exceptions.Forbidden:
        raise StorageUnreachable(f"no permission to read gs://{bucket} (of {path}); check the account's roles "
                                 "(roles/storage.objectAdmin on the bucket)") from None
    except exceptions.GoogleAPICallError as error:
        raise StorageUnreachable(f"storage at {endpoint} did not answer for {path}: {error}; check the network "
                                 "and credentials") from None
    except DefaultCredentialsError:
        raise StorageUnreachable(f"no Google Cloud credentials to read {path}; run `gcloud auth "
                                 "application-default login`, or run where a service account is attached") from None
