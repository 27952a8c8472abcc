"""One PyTorch weight file of one network -> one MindSpore checkpoint of our port of it, by a name table.

For the measuring networks (I3D, InceptionV3, the CLIP text tower): their cells carry the original names, so a
table is a function from a source key to our parameter name (None: knowingly unused, e.g. BatchNorm's
``num_batches_tracked``). As in ``converter.py``, everything is checked before anything is written: every
source key mapped or knowingly unused, every parameter filled exactly once with its exact shape; otherwise a
``ConversionError`` lists the offending keys and no file appears.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

from tqdm import tqdm

from exvideo_ms.checkpoint import CheckpointError, CheckpointWriter, cast, compare_names_and_shapes, dtype_key
from exvideo_ms.convert.converter import ConversionError, check_destinations
from exvideo_ms.convert.sources import Source, open_file

Rename = Callable[[str], Optional[str]]


def plan_network(source, shapes: Dict[str, tuple], rename: Rename, what: str) -> Dict[str, str]:
    """{our name: source key} for a network whose parameters have ``shapes``, checked against ``source``."""
    table: Dict[str, str] = {}
    found: Dict[str, tuple] = {}
    for key in source.keys():
        name = rename(key)
        if name is None:
            continue
        if name in table:
            raise ConversionError(f"{source.path}: keys {table[name]!r} and {key!r} both map to {name!r}")
        table[name], found[name] = key, tuple(source.shape(key))
    try:
        compare_names_and_shapes(shapes, found, f"{source.path} ({what})")
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    return table


def convert_network_file(path, output, shapes: Dict[str, tuple], rename: Rename, what: str,
                         allow_pickle: bool = False, dtype: str = "fp32", overwrite: bool = False,
                         progress: bool = True) -> int:
    """Write ``output`` from the weight file ``path`` (or a ``Source`` already open on it, so that a large
    pickle is not loaded twice); returns the number of tensors written."""
    output = Path(output)
    if output.suffix not in (".ckpt", ".safetensors"):
        raise ConversionError(f"--output must end in .ckpt or .safetensors, got {output}")
    check_destinations([path.path if isinstance(path, Source) else path], [output], overwrite)
    source = path if isinstance(path, Source) else open_file(path, allow_pickle)
    table = plan_network(source, shapes, rename, what)
    layout = {name: (shapes[name], dtype) for name in table}
    with CheckpointWriter(output, layout) as writer:
        for name, key in tqdm(table.items(), desc=f"writing {output.name}", unit="tensor", disable=not progress):
            array = source.get(key)
            writer.write(name, cast(array, dtype), dtype_key(array, dtype))
    return len(table)
