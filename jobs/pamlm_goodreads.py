"""PA-MLM on GoodReads as a Ray job (see `--help`):

    ray job submit --working-dir . -- python jobs/pamlm_goodreads.py --preset goodreads-smoke
"""

import sys

from job_cli import job_main

if __name__ == "__main__":
    job_main("pamlm", "goodreads", "pamlm_goodreads.py", sys.argv[1:])
