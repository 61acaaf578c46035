# The two commands of the README:  `make run`  and  `make test`.
# Both install the pinned stack into .venv first (once; redone when the pins change).

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip install -q --disable-pip-version-check
export OMP_NUM_THREADS ?= 2

.PHONY: install run test test-fast mutants bench-prepare bench-ctr-train bench-train bench-serve bench-endpoint bench-hybrid bench-ingest clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml cp_dist/serving/_key_index.c
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip==26.3
	$(PIP) -r requirements.txt -c constraints.txt
	$(PIP) --no-deps -r requirements-nodeps.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

## The main job on the embedded default: real MovieLens-100K, MiniLM, CPU (`make run DATA=ml-1m`: the paper's ML-1M).
DATA ?= ml-100k
run: install
	$(PY) jobs/quickstart.py --dataset $(DATA)

## The test suite (what .ci/run calls): ruff, then every test. `make test-fast` leaves out the slow ones.
test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

test-fast: install
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow"

## Semantic mutations of the model code, each against the tests that guard it (tests/mutants.py; a few minutes).
mutants: install
	$(PY) tests/mutants.py

## Preparation at paper scale (GoodReads format, ~20.1M interactions): the local engine, then the Ray
## engine with 2 and 1 workers, outputs compared (~25 min on 2 cores with the raw files' generation).
bench-prepare: install
	$(PY) perf/bench_prepare.py --rows 20950000 --ray-workers 2 1

## DCNv2 training samples/s: 1 process against 2 sharded processes (~2 min).
bench-ctr-train: install
	$(PY) perf/bench_ctr_train.py --steps 150

## Training samples/s: CTR-only against PA-MLM and finetuning with MiniLM (2 and 6 layers), eager and compiled (~16 min).
bench-train: install
	$(PY) perf/bench_train.py --compile

## Serving latency from raw candidates: DCNv2, ClickPrompt without / with MiniLM (~5 min; needs `make run` data).
bench-serve: install
	$(PY) perf/bench_serve.py

## The HTTP endpoint under 1, 8 and 64 concurrent clients, beside the in-process call (~3 min; needs `make run`).
bench-endpoint: install
	$(PY) perf/bench_endpoint.py

## Hybrid engine per-rank memory and samples/s: 1 vs 2 ranks, ZeRO-3/2/0, MiniLM (~7 min).
bench-hybrid: install
	$(PY) perf/bench_hybrid.py --cases 1:3 2:3 2:2 2:0 --rows 300000 --set ctr.embedding_dim=32

## Ingestion: per-value tokens against row-by-row tokenization, per-rank reading for 1-8 ranks (1M GoodReads lines; ~25 min).
bench-ingest: install
	$(PY) perf/bench_ingest.py

clean:
	rm -rf $(VENV) runs .pytest_cache
