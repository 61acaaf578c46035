"""Preparation of raw files on the Ray cluster, as its own job (see `--help`):

    ray job submit --working-dir . -- python jobs/prepare.py --dataset goodreads \
        --raw /mnt/data/goodreads-raw --out /mnt/cluster_storage/cp_dist/goodreads

`cp-dist data prepare --engine ray` with the cluster of the job: the parsing, counting and writing run
in tasks on the workers, the driver on the head holds no rows. --raw and --out must be directories
every node mounts.
"""

import sys

from cp_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "prepare", "--engine", "ray", *sys.argv[1:]]))
