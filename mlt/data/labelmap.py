"""Label maps: for each target class, the source classes (WordNet ids) that mean it.

A label map is a small YAML file::

    # TinyVOC label map: VOC class -> Tiny-ImageNet wnids
    name: tinyvoc
    classes:
      bird: [n02058221, n02002724]   # albatross, black stork
      boat: [n03447447]              # gondola

``classes`` is ordered: the i-th class is target class i, and background is class C (the number
of classes). Its wnids are the "related" source classes of ``mlt.data.subsets``. Loading checks
everything a user can get wrong and names the file, the field (``classes.dog``) and the value:
unknown top-level keys, duplicate keys (which ``yaml.safe_load`` would silently merge), empty or
non-list classes, malformed wnids, a wnid under two classes, and (given the source set's wnids)
wnids the source set does not have.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlt.data.source import is_wnid
from mlt.data.textfiles import read_text
from mlt.errors import InputError

TOP_LEVEL_KEYS = ("name", "classes")
BACKGROUND = "background"
CLASS_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]*")


@dataclass(frozen=True)
class LabelMap:
    """Target classes in file order (index = target label; background = ``num_classes``) and their source wnids."""

    path: Path | None
    target_classes: list[str]
    sources: dict[str, list[str]]
    name: str = ""

    @property
    def num_classes(self) -> int:
        """Returns C, the number of target classes (background is label C)."""
        return len(self.target_classes)

    def related_wnids(self) -> list[str]:
        """Returns the sorted union of every target class's source wnids."""
        return sorted({w for wnids in self.sources.values() for w in wnids})

    def source_to_target(self) -> dict[str, str]:
        """Returns source wnid -> target class name."""
        return {w: cls for cls in self.target_classes for w in self.sources[cls]}


class _DuplicateKey(Exception):
    def __init__(self, field: str, key: object, first_line: int, line: int) -> None:
        super().__init__(field)
        self.field, self.key, self.first_line, self.line = field, key, first_line, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated within one mapping, naming its dotted path."""

    def construct_document(self, node):
        self._paths = _node_paths(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merges are SafeLoader's business
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable key: SafeLoader reports it itself
            line = key_node.start_mark.line + 1
            if first is not None:
                parent = self._paths.get(id(node), "")
                raise _DuplicateKey(f"{parent}.{key}" if parent else str(key), key, first, line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _node_paths(root) -> dict[int, str]:
    """Returns id(mapping node) -> its dotted path in the document ("" for the top level)."""
    paths: dict[int, str] = {}
    stack = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            paths[id(node)] = path
            for key_node, value_node in node.value:
                key = getattr(key_node, "value", "?")
                stack.append((value_node, f"{path}.{key}" if path else str(key)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
    return paths


def load_label_map(path: str | Path, known_wnids: Iterable[str] | None = None) -> LabelMap:
    """Returns the validated LabelMap read from the YAML file at ``path``.

    With ``known_wnids`` (the source set's classes), every wnid must be one of them.
    """
    path = Path(path)
    text = read_text(path, "label map file")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise InputError(
            path,
            e.field,
            e.key,
            f"each key once (first at line {e.first_line}, again at line {e.line})",
            kind="duplicate key",
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise InputError(
            path, where, getattr(e, "problem", None) or str(e), "valid YAML", kind="malformed YAML"
        ) from None
    return _validate(path, data, known_wnids)


def _validate(path: Path, data: object, known_wnids: Iterable[str] | None) -> LabelMap:
    if not isinstance(data, dict):
        raise InputError(
            path,
            None,
            data,
            "a mapping with 'classes' (and optionally 'name')",
            kind="bad label map",
        )
    extra = [k for k in data if k not in TOP_LEVEL_KEYS]
    if extra:
        raise InputError(
            path,
            str(extra[0]),
            extra[0],
            f"only the keys {list(TOP_LEVEL_KEYS)}",
            kind="unknown key",
        )
    name = data.get("name", "")
    if name is None or not isinstance(name, str | int):
        raise InputError(path, "name", name, "a short name for the label map", kind="bad value")
    classes = data.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise InputError(
            path,
            "classes",
            classes,
            "a mapping of target class -> list of source wnids, at least one class",
            kind="missing classes" if classes is None else "bad value",
        )
    owner: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    for cls, wnids in classes.items():
        field = f"classes.{cls}"
        if not isinstance(cls, str) or not CLASS_NAME_RE.fullmatch(cls) or cls == BACKGROUND:
            raise InputError(
                path,
                field,
                cls,
                f"a class name of letters, digits, '_', '-', '.', other than '{BACKGROUND}'",
                kind="bad class name",
            )
        if not isinstance(wnids, list) or not wnids:
            raise InputError(
                path,
                field,
                wnids,
                "a non-empty list of source wnids like [n02085620, n02094433]",
                kind="bad value",
            )
        for i, wnid in enumerate(wnids):
            if not is_wnid(wnid):
                raise InputError(
                    path,
                    f"{field}[{i}]",
                    wnid,
                    "a WordNet id: 'n' and 8 digits, like n02085620",
                    kind="bad wnid",
                )
            if wnid in owner:
                where = (
                    "twice under this class"
                    if owner[wnid] == cls
                    else f"also under classes.{owner[wnid]}"
                )
                raise InputError(
                    path,
                    field,
                    wnid,
                    f"each wnid under one class only ({where})",
                    kind="duplicate wnid",
                )
            owner[wnid] = cls
        sources[cls] = list(wnids)
    if known_wnids is not None:
        known = set(known_wnids)
        unknown = [(cls, w) for cls in sources for w in sources[cls] if w not in known]
        if unknown:
            cls, wnid = unknown[0]
            listed = ", ".join(w for _, w in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            raise InputError(
                path,
                f"classes.{cls}",
                wnid,
                f"wnids of the source set ({len(known)} classes); the label map names "
                f"{len(unknown)} unknown classes: {listed}",
                kind="unknown class",
            )
    return LabelMap(path, list(sources), sources, str(name))


def dump_label_map(
    label_map: LabelMap, path: str | Path, names: dict[str, str] | None = None
) -> None:
    """Writes ``label_map`` as YAML to ``path`` (returns None); ``names`` (wnid -> name) become comments."""
    lines = [
        f"# Label map{' ' + label_map.name if label_map.name else ''}: target class -> source classes (WordNet ids).",
        "# Class order is the target label order; background is label C = the number of classes.",
    ]
    if label_map.name:
        lines.append(f"name: {_yaml_scalar(label_map.name)}")
    lines.append("classes:")
    width = max(len(_yaml_scalar(c)) for c in label_map.target_classes)
    for cls in label_map.target_classes:
        wnids = label_map.sources[cls]
        row = f"  {_yaml_scalar(cls) + ':':<{width + 1}} [{', '.join(wnids)}]"
        if names:
            row += "  # " + ", ".join(names.get(w, "?") for w in wnids)
        lines.append(row)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _yaml_scalar(text: str) -> str:
    """Returns ``text`` as a YAML scalar that reads back as the same string (quoted only if needed)."""
    try:
        plain = yaml.safe_load(f"{text}: 0") == {text: 0}
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)
