"""The DAG registry: built-in DAG modules and user DAG files, loaded by module name or path.

A module contributes every `Dag` it holds at module level. A user DAG file that fails to
import (or defines a bad DAG) is listed with its error instead of taking Vireo down. Job
processes load only the one source their DAG comes from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from core.workflows.dag import Dag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenDagFile:
    """A DAG file that could not be loaded, and why."""

    path: str
    error: str

    def describe(self) -> dict[str, Any]:
        return {"dag_id": None, "file": self.path, "description": "", "config_schema": None, "error": self.error}


class UnknownDag(LookupError):
    pass


class DagRegistry:
    def __init__(self) -> None:
        self._dags: dict[str, Dag] = {}
        self._broken: dict[str, BrokenDagFile] = {}
        self._loaded: set[str] = set()
        self._lock = threading.RLock()

    # ---- loading -------------------------------------------------------------------------
    def load_module(self, name: str) -> None:
        """Import a module of built-in DAGs (its import errors are Vireo's bugs: they propagate)."""
        with self._lock:
            if name in self._loaded:
                return
            self._collect(importlib.import_module(name), name)
            self._loaded.add(name)

    def load_folder(self, folder: Path | None) -> None:
        """(Re)load every `*.py` in the user DAGs folder; failures are kept as broken entries."""
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.glob("*.py")):
            self.load_file(path)

    def load_file(self, path: Path) -> None:
        key = str(path.resolve())
        with self._lock:
            self._broken.pop(key, None)
            for dag_id in [d for d, dag in self._dags.items() if dag.source == key]:
                del self._dags[dag_id]
            try:
                module = _import_file(path)
                self._collect(module, key)
            except (Exception, SystemExit) as exc:  # a user's file must not stop Vireo
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                log.warning("DAG file %s could not be loaded: %s", path, detail)
                self._broken[key] = BrokenDagFile(key, detail)
            self._loaded.add(key)

    def load_source(self, source: str) -> None:
        """Load what defines a DAG in a job process: a module name or a file path."""
        if source in self._loaded:
            return
        if source.endswith(".py"):
            self.load_file(Path(source))
            if source in self._broken:
                raise UnknownDag(self._broken[source].error)
        else:
            self.load_module(source)

    def register(self, dag: Dag, source: str) -> None:
        with self._lock:
            existing = self._dags.get(dag.dag_id)
            if existing is not None and existing.source != source:
                raise ValueError(f"DAG id {dag.dag_id!r} is defined twice: in {existing.source} and in {source}")
            dag.source = source
            self._dags[dag.dag_id] = dag

    def _collect(self, module: ModuleType, source: str) -> None:
        dags = [value for value in vars(module).values() if isinstance(value, Dag)]
        for dag in dags:
            self.register(dag, source)

    # ---- reading -------------------------------------------------------------------------
    def get(self, dag_id: str) -> Dag:
        with self._lock:
            dag = self._dags.get(dag_id)
        if dag is None:
            raise UnknownDag(f"no DAG {dag_id!r}")
        return dag

    def dags(self) -> list[Dag]:
        with self._lock:
            return sorted(self._dags.values(), key=lambda d: d.dag_id)

    def broken(self) -> list[BrokenDagFile]:
        with self._lock:
            return list(self._broken.values())

    def describe(self) -> list[dict[str, Any]]:
        return [d.describe() for d in self.dags()] + [b.describe() for b in self.broken()]


def _import_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"vireo_user_dags.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
