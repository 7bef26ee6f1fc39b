"""`make house`: the drawing of the library, as figures: its packages ("rooms") and the floors
the import-linter `layers` contract puts them on, the imports that run up a floor, and the
circles (groups of modules that import each other). ``--root`` draws another checkout's
library (e.g. an older commit) against this contract's floors."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]


def floors(pyproject: Path = CHECKOUT / "pyproject.toml") -> list[list[str]]:
    """The layers contract's floors, ground floor first."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in config if c["type"] == "layers"]
    return [[name.strip() for name in floor.split(":")] for floor in reversed(layers)]


def draw(libs: Path) -> dict[str, Any]:
    import grimp
    import networkx as nx

    sys.path.insert(0, str(libs))
    graph = grimp.build_graph("medxiaohe", cache_dir=None)
    floor_of = {room: n for n, rooms in enumerate(floors()) for room in rooms}
    rooms = sorted({m.split(".")[1] for m in graph.modules if m.count(".") >= 1})
    drawing = nx.DiGraph()
    up: list[str] = []
    unplaced: list[str] = []  # a room on a floor importing one on none
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            drawing.add_edge(module, imported)
            a, b = module.split(".")[1:2], imported.split(".")[1:2]
            if not a or not b or a == b or a[0] not in floor_of:
                continue
            if b[0] not in floor_of:
                unplaced.append(f"{module} -> {imported}")
            elif floor_of[b[0]] > floor_of[a[0]]:
                up.append(f"{module} -> {imported}")
    circles = [sorted(c) for c in nx.strongly_connected_components(drawing) if len(c) > 1]
    return {
        "rooms": len(rooms),
        "floors": len(floors()),
        "rooms_on_no_floor": sorted(set(rooms) - set(floor_of)),
        "imports_up_a_floor": len(up),
        "up": up,
        "imports_into_rooms_on_no_floor": unplaced,
        "circles": len(circles),
        "circle_modules": circles,
        "modules": len(graph.modules),
        "imports": drawing.number_of_edges(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=CHECKOUT, help="A checkout to draw.")
    args = parser.parse_args()
    print(json.dumps(draw(args.root.resolve() / "libs")))


if __name__ == "__main__":
    main()
