"""Finetuning with the PLM on GoodReads as a Ray job (see `--help`):

    ray job submit --working-dir . -- python jobs/finetune_goodreads.py --preset goodreads-smoke
"""

import sys

from job_cli import job_main

if __name__ == "__main__":
    job_main("with_plm", "goodreads", "finetune_goodreads.py", sys.argv[1:])
