"""`python -m skin_demo.train combine PACKAGE PACKAGE ... --out DIR`: single-task packages of one network (the
multi-task net exported once per task) as one package with a head per task, whose backbone runs once for all.

The graphs are merged node by node: a node whose operator, attributes and inputs equal one already taken is taken
once, and so is an initializer whose type, shape and bytes equal one already taken, whatever their names. What
differs (each task's classifier) stays per head, with its outputs named `<task>/<name>` (config.head_output). The
config is format 2: each package's config, unchanged, as one of `heads` (skin_demo.config.package_heads). DIR
gets the merged model.onnx with that config embedded, config.json, a model card (the heads' cards, each under its
own heading) and each package's eval/ under eval/<task>/. The merged file must give every head's outputs as its
package did on a test batch (MAX_OUTPUT_CHANGE), or nothing is written.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from huggingface_hub import ModelCard
from onnx import helper, numpy_helper

from skin_demo.config import INPUT_NAME, MODEL_FILE, OUTPUT_NAME, PackageConfig, head_output
from skin_demo.modelpack import ModelPack, PackageError, load_package
from skin_demo.train.card import NOT_A_DIAGNOSIS
from skin_demo.train.package_files import EVAL_DIR, heads_config_json, write_package

MAX_OUTPUT_CHANGE = 1e-4  # the largest difference allowed between a head's output and its package's, on TEST_BATCH
TEST_BATCH = 4
_SECTION = re.compile(r"^## ", re.MULTILINE)


class CombineError(ValueError):
    """The packages cannot be one graph (another input, opset or preprocessing), or the merged graph differs."""


def merge_graphs(models: dict[str, onnx.ModelProto]) -> onnx.ModelProto:
    """One graph with every model's outputs, named `<task>/<name>`; nodes and initializers equal across the models
    are kept once. The models must share their one input and their opsets."""
    first = next(iter(models.values()))
    for task, model in models.items():
        _check_compatible(first, model, task)
    initializers: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    nodes: dict[tuple[Any, ...], list[str]] = {}
    used = {INPUT_NAME, *(head_output(task, o.name) for task, model in models.items() for o in model.graph.output)}
    graph = helper.make_graph([], "+".join(models), list(first.graph.input), [])
    for task, model in models.items():
        renamed = {INPUT_NAME: INPUT_NAME, "": ""}
        for tensor in model.graph.initializer:
            array = numpy_helper.to_array(tensor)
            key = (tensor.data_type, tuple(tensor.dims), array.tobytes())
            if key not in initializers:
                initializers[key] = _unused(tensor.name, task, used)
                graph.initializer.append(numpy_helper.from_array(array, initializers[key]))
            renamed[tensor.name] = initializers[key]
        for node in model.graph.node:
            inputs = [renamed[name] for name in node.input]
            key = (node.domain, node.op_type, tuple(inputs), len(node.output),
                   tuple(sorted(a.SerializeToString() for a in node.attribute)))  # fmt: skip
            if key not in nodes:
                nodes[key] = [_unused(name, task, used) if name else "" for name in node.output]
                merged = onnx.NodeProto()
                merged.CopyFrom(node)
                merged.name = _unused(node.name, task, used) if node.name else ""
                del merged.input[:], merged.output[:]
                merged.input.extend(inputs)
                merged.output.extend(nodes[key])
                graph.node.append(merged)
            renamed.update(zip(node.output, nodes[key], strict=True))
        for output in model.graph.output:
            name = head_output(task, output.name)
            graph.node.append(helper.make_node("Identity", [renamed[output.name]], [name], name=name))
            head = onnx.ValueInfoProto()
            head.CopyFrom(output)
            head.name = name
            graph.output.append(head)
    merged_model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="skin_demo.train")
    merged_model.ir_version = first.ir_version
    onnx.checker.check_model(merged_model)
    return merged_model


def combine_packages(package_dirs: Sequence[Path], out_dir: Path) -> Path:
    """Write the package with a head per package in `package_dirs` (one task each) to `out_dir`; returns it.

    Raises CombineError (or PackageError for a package that does not load) and writes nothing then."""
    packs = [ModelPack.load(folder, threads=1) for folder in package_dirs]
    tasks = [pack.config.task for pack in packs]
    if len(packs) < 2 or len(set(tasks)) != len(tasks):
        raise CombineError(f"combine needs two or more packages of different tasks, got tasks {tasks}")
    heads = [pack.config for pack in packs]
    merged = merge_graphs({pack.config.task: onnx.load(str(pack.path / MODEL_FILE)) for pack in packs})
    cards = [pack.readme.read_text() if pack.readme else None for pack in packs]
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent if Path(out_dir).parent.is_dir() else None) as tmp:
        card = combined_card(heads, cards, Path(out_dir).name)
        staged = write_package(Path(tmp) / "package", merged, heads_config_json(heads), card)
        for pack in packs:
            if (pack.path / EVAL_DIR).is_dir():
                shutil.copytree(pack.path / EVAL_DIR, staged / EVAL_DIR / pack.config.task)
        _check_same_outputs(packs, load_package(staged, threads=1))
        out_dir = Path(out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(staged, out_dir)
    return out_dir


def combined_card(heads: Sequence[PackageConfig], head_cards: Sequence[str | None], folder_name: str) -> str:
    """The card of a package with a head per task: the heads' card metadata together, a usage note for the one
    graph, then each head's own card (`head_cards`: its Markdown under a heading of its own, its "How to use" left
    out, as that one is for a single-task file). Named after the package's folder, as a single-task card is after
    its task (models/classifiers: skin-demo-classifiers)."""
    cards = [ModelCard(text) if text else None for text in head_cards]
    name = f"skin-demo-{folder_name.replace('_', '-')}"
    data: dict[str, Any] = {}
    for card in cards:
        for key, value in (card.data.to_dict() if card else {}).items():
            if key == "model-index":  # one model: every head's results under its name
                data.setdefault(key, [{"name": name, "results": []}])[0]["results"] += [
                    result for entry in value for result in entry.get("results", [])]
            elif isinstance(value, list) and isinstance(data.get(key), list):
                data[key] = data[key] + [v for v in value if v not in data[key]]
            else:
                data.setdefault(key, value)
    size = heads[0].preprocess.size
    lines = [
        f"# {name}: one network, a head per task (ONNX)",
        "",
        f"> {NOT_A_DIAGNOSIS}",
        "",
        f"One `{heads[0].architecture or 'network'}` trained once with a head per task. The graph takes "
        f"`{INPUT_NAME}` (float32 `[N, 3, {size[0]}, {size[1]}]`) and runs its backbone once for every head; "
        f"`config.json` holds each head's config under `heads`, in this order.",
        "",
        "| head | outputs | labels |",
        "|---|---|---|",
    ]
    for config in heads:
        outputs = ", ".join(f"`{head_output(config.task, name)}`" for name in (OUTPUT_NAME, *config.outputs))
        lines.append(f"| {config.task} | {outputs} | {', '.join(config.labels)} |")
    lines += [
        "",
        "```python",
        "import json, numpy as np, onnxruntime as ort",
        "session = ort.InferenceSession(\"model.onnx\")",
        "heads = {head[\"task\"]: head for head in json.load(open(\"config.json\"))[\"heads\"]}",
        "# x: the image preprocessed as any head's config[\"preprocess\"] says (all heads share it)",
        "names = [f\"{task}/logits\" for task in heads]",
        "for task, logits in zip(heads, session.run(names, {\"image\": x})):",
        "    z = logits[0] / heads[task][\"temperature\"]",
        "    print(task, dict(zip(heads[task][\"labels\"], np.exp(z - z.max()) / np.exp(z - z.max()).sum())))",
        "```",
    ]
    for config, card in zip(heads, cards, strict=True):
        lines += ["", f"## The {config.task} head", ""]
        if card is None:
            lines.append("(its package had no model card)")
            continue
        body = "\n".join(s for s in _SECTION.split(card.text) if not s.startswith("How to use"))
        body = re.sub(r"^(#+) ", r"##\1 ", body, flags=re.MULTILINE)  # under this head's own heading
        body = body.replace(f"]({EVAL_DIR}/", f"]({EVAL_DIR}/{config.task}/")  # its eval/ is there
        lines.append(body.strip())
    return f"---\n{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---\n\n" + "\n".join(lines) + "\n"


def _check_compatible(first: onnx.ModelProto, model: onnx.ModelProto, task: str) -> None:
    if [i.SerializeToString() for i in model.graph.input] != [i.SerializeToString() for i in first.graph.input]:
        raise CombineError(f"{task}: its graph's input differs from the first package's; the heads share one input")
    if {(o.domain, o.version) for o in model.opset_import} != {(o.domain, o.version) for o in first.opset_import}:
        raise CombineError(f"{task}: its graph's opsets differ from the first package's")
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node
           for a in n.attribute):  # fmt: skip
        raise CombineError(f"{task}: its graph has subgraphs (If / Loop), which combine does not merge")


def _unused(name: str, task: str, used: set[str]) -> str:
    """`name`, or `<task>/<name>` where another tensor or node already has it."""
    chosen = name if name not in used else head_output(task, name)
    while chosen in used:
        chosen = "_" + chosen
    used.add(chosen)
    return chosen


def _check_same_outputs(packs: Sequence[ModelPack], combined: dict[str, ModelPack]) -> None:
    height, width = packs[0].config.preprocess.size
    batch = np.random.default_rng(0).standard_normal((TEST_BATCH, 3, height, width)).astype(np.float32)
    run = next(iter(combined.values())).graph_outputs(batch)
    for pack in packs:
        head = combined[pack.config.task].own_outputs(run)
        for name, expected in pack.outputs(batch).items():
            change = float(np.max(np.abs(head[name] - expected)))
            if change > MAX_OUTPUT_CHANGE:
                raise CombineError(f"{pack.config.task}: the merged graph's {name} differs from its package's by "
                                   f"{change:.2g} (at most {MAX_OUTPUT_CHANGE:g} allowed)")  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("combine", help="single-task packages of one network as one package with a head "
                                                   "per task (the backbone runs once)")  # fmt: skip
    parser.add_argument("packages", type=Path, nargs="+", help="the packages, one task each, in head order")
    parser.add_argument("--out", type=Path, required=True, help="the package to write (replaced if it exists)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        out = combine_packages(args.packages, args.out)
    except (CombineError, PackageError) as exc:
        print(f"combine: {exc}", file=sys.stderr)
        return 2
    before = sum((Path(p) / MODEL_FILE).stat().st_size for p in args.packages)
    after = (out / MODEL_FILE).stat().st_size
    nodes = [len(onnx.load(str(Path(p) / MODEL_FILE), load_external_data=False).graph.node) for p in args.packages]
    merged_nodes = len(onnx.load(str(out / MODEL_FILE), load_external_data=False).graph.node)
    print(f"wrote {out}: {merged_nodes} nodes (the packages: {' + '.join(map(str, nodes))}), "
          f"{after / 1e6:.2f} MB (the packages: {before / 1e6:.2f} MB)")  # fmt: skip
    return 0
