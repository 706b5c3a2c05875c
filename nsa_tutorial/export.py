"""ONNX export of a trained model (:func:`nsa_tutorial.inference.load_onnx` runs the file).

Book chapter: *Using a trained model*.

The exported graph is :class:`nsa_tutorial.evaluate.ScoringModel`: uint8 RGB images
``B x S x S x 3`` at the evaluation size in (normalisation and the objects' centre crop are
inside), ``scores`` (``B``, the map's mean) and ``maps`` (``B x S x S``) out.  The model's
config, its calibration and the input size travel in the file's ``metadata_props``, so the
file alone is enough to predict (``nsa-tutorial predict --checkpoint model.onnx``).  Needs the
``export`` extra (``pip install "nsa-tutorial[export]"``: onnx and onnxruntime).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional, Union

import torch

from .checkpoint import load_calibration, load_model
from .config import Config
from .evaluate import ScoringModel
from .inference import METADATA_PREFIX, needs_extra

OPSET = 17
#: Largest difference between an onnxruntime and a PyTorch anomaly map (and score) that the
#: tests accept, for float32 on the CPU (both are sigmoid outputs in [0, 1]).
PARITY_ATOL = 1e-4


def export_onnx(checkpoint: Union[str, Path], output: Union[str, Path]) -> Path:
    """Write the model in ``checkpoint`` (a ``model.pt``) as an ONNX file with its metadata.

    The batch size is free, the image size fixed (``input_size`` in the metadata).  Written
    atomically; the checkpoint itself is never overwritten.  Book chapter: *Using a trained model*.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    if output.exists() and output.resolve() == checkpoint.resolve():
        raise ValueError(f"output {output} is the checkpoint itself; choose another file name")
    model, config = load_model(checkpoint)
    return export_model(model, config, load_calibration(checkpoint), output)


def export_model(model: torch.nn.Module, config: Config, calibration: Optional[dict],
                 output: Union[str, Path]) -> Path:
    """Write ``model`` (its :class:`~nsa_tutorial.evaluate.ScoringModel` graph) with ``config``
    and ``calibration`` as metadata to ``output``, atomically."""
    import copy
    import dataclasses

    from .evaluate import eval_size
    from .files import atomic_write

    onnx = needs_extra("onnx")
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"output {output} is a folder; expected a file name such as model.onnx")
    scoring = ScoringModel(copy.deepcopy(model).cpu(), config).eval()
    size = eval_size(config)
    output.parent.mkdir(parents=True, exist_ok=True)
    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript exporter
            torch.onnx.export(scoring, (torch.zeros(1, size, size, 3, dtype=torch.uint8),), str(tmp),
                              dynamo=False, opset_version=OPSET, input_names=["images"],
                              output_names=["scores", "maps"],
                              dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}, "maps": {0: "batch"}})
        graph = onnx.load(str(tmp))
        metadata = {"config": json.dumps(dataclasses.asdict(config)), "input_size": str(size),
                    "calibration": json.dumps(calibration),
                    "input": "uint8 RGB images, batch x input_size x input_size x 3 (resize first)",
                    "outputs": "scores: mean of the anomaly map; maps: anomaly maps, batch x size x size"}
        for key, value in metadata.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = METADATA_PREFIX + key, value
        graph.producer_name = "nsa_tutorial"
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))

    atomic_write(output, write)
    return output
