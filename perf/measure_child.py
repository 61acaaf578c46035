"""Runs a command and prints its wall time and peak RSS as JSON (the last line of stdout)."""

import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=sys.stderr)
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
}))
