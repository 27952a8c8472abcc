"""Convert the PyTorch weights of a network the video scores need into a MindSpore checkpoint, once.

Example (FVD's I3D, from the file cd-fvd downloads):
  python svd_tools/convert_metric_network.py --network i3d --source i3d_pretrained_400.pt --output models/i3d.ckpt \\
      --allow-pickle

Every source key is mapped to a parameter of our port or knowingly unused, and every parameter is filled with
its exact shape; otherwise nothing is written and the offending keys are listed. Needs torch for pickled
(.pt/.pth) sources: pip install 'exvideo-ms[convert]'.
"""
import argparse
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    from exvideo_ms.metrics.networks import NETWORKS
    epilog = "networks:\n" + "\n".join(f"  {n:10s} {s.scores}: {s.source_file} ({s.where})" for n, s in NETWORKS.items())
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", required=True, choices=sorted(NETWORKS))
    parser.add_argument("--source", required=True, metavar="PATH", help="the PyTorch weights file")
    parser.add_argument("--output", required=True, metavar="OUT.ckpt", help="MindSpore checkpoint to write")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickled PyTorch sources (.pt/.pth/.ckpt/.bin), read with weights_only=True")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from exvideo_ms import backend
    from exvideo_ms.checkpoint import network_shapes
    from exvideo_ms.convert.converter import ConversionError, check_destinations
    from exvideo_ms.convert.network_file import convert_network_file
    from exvideo_ms.convert.sources import SourceError, open_file
    from exvideo_ms.metrics.networks import source_shapes
    spec = NETWORKS[args.network]
    try:
        check_destinations([args.source], [Path(args.output)], args.overwrite)  # before reading a large source
        source = open_file(args.source, args.allow_pickle)
        shapes = network_shapes(spec.build(backend.choices(), source_shapes(args.network, source)))
        n = convert_network_file(source, args.output, shapes, spec.rename, args.network,
                                 allow_pickle=args.allow_pickle, overwrite=args.overwrite, progress=not args.quiet)
    except (ConversionError, SourceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.info("wrote %s: %d tensors of the %s network (%s)", args.output, n, args.network, spec.scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
