#!/usr/bin/env python
"""Write a tiny pretrained BERT folder (model and tokenizer, as save_pretrained writes them) made
from the WikiText-2 excerpt in data/, to try suites/hf/distil-bert.yaml with nothing downloaded.

    python scripts/make-tiny-bert.py models/tiny-bert            # trained 200 MLM steps (a few minutes)
    python scripts/make-tiny-bert.py models/tiny-bert --steps 0  # random weights (seconds)

Needs the hf extra (pip install "kdbench[hf]"). See kdbench/tiny_bert.py.
"""

import argparse
import sys

import torch

from kdbench.errors import UserError
from kdbench.progress import ProgressEvent, Reporter
from kdbench.testing.tiny_bert import make_tiny_bert


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the folder to write (created)")
    parser.add_argument("--steps", type=int, default=200, help="MLM training steps on the excerpt (0: random weights)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the training batches")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # a bar on a terminal, a line every tenth of the steps (and every minute) when piped
    start = ProgressEvent("teacher_start", "teacher", args.folder, "tiny-bert MLM pretraining", None, args.seed,
                          steps=args.steps)
    try:
        with Reporter() as reporter, reporter.job(start, "pretraining", args.steps or None) as progress:
            folder = make_tiny_bert(args.folder, steps=args.steps, seed=args.seed, log=reporter.log,
                                    progress=progress)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {folder}: set MY_BERT={folder.resolve()} for suites/hf/distil-bert.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
