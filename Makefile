# MedXIAOHE platform. `make help` lists the targets; every target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3
PIP := $(PY) -m pip --disable-pip-version-check -q
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
SOURCES := libs/medxiaohe services training-jobs benchmarks tests protos/generate.py

.PHONY: help venv install lock install-check images protos lint check test browser demo house gpu-check clean met train-ner train-small rl-small bench-tagging bench-ingest bench-mixture bench-serving bench-reliability eval-suite bench-decontaminate eval-rubric eval-grounding figures

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv with pinned dependencies (torch 2.13.0 CPU first)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=25"
	# torch first, a CPU build: the local wheel where pip's find-links has one, else PyTorch's
	# CPU index (PyPI's Linux wheel is the multi-GB CUDA build)
	if $(PIP) download torch==2.13.0 --no-deps --no-index -d $(VENV)/.torch >/dev/null 2>&1; \
	then $(PIP) install $(VENV)/.torch/torch-2.13.0*.whl; \
	else $(PIP) install torch==2.13.0 --index-url $(TORCH_INDEX); fi
	rm -rf $(VENV)/.torch
	DS_BUILD_OPS=0 $(PIP) install -c constraints.txt -e ".[dev]"
	touch $@

lock: ## Pin every installed package in constraints.txt (after changing pyproject's pins)
	{ echo "# Every package of the development environment, pinned (make lock). CI and both"; \
	  echo "# images install with -c constraints.txt. Local version labels (+cpu) are cut."; \
	  $(PIP) freeze --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$$//' | grep -v '^medxiaohe='; \
	} > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

install: venv ## Alias of venv

protos: venv ## Regenerate libs/medxiaohe_protos from protos/
	$(PY) protos/generate.py

lint: venv ## ruff + mypy + import contracts + declared dependencies
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/mypy -p medxiaohe -p medxiaohe_services -p medxiaohe_training -p benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry libs services training-jobs benchmarks

house: venv ## The library's drawing as JSON: rooms, floors, imports up a floor, circles
	$(PY) -m benchmarks.house

check: lint ## lint, protos in sync, buf lint, chart render + validation
	$(PY) protos/generate.py --check
	$(VENV)/bin/buf lint
	$(VENV)/bin/medxiaohe chart check
	$(MAKE) install-check

CONTAINER ?= podman
images: ## Build the services and training images (CONTAINER, CONTAINER_FLAGS, TORCH_INDEX_CUDA)
	$(CONTAINER) build $(CONTAINER_FLAGS) --build-arg TORCH_INDEX=$(TORCH_INDEX) \
		-f services/Dockerfile -t medxiaohe/services:0.1.0 .
	$(CONTAINER) build $(CONTAINER_FLAGS) --build-arg TORCH_INDEX=$(or $(TORCH_INDEX_CUDA),https://download.pytorch.org/whl/cu128) \
		-f training-jobs/Dockerfile -t medxiaohe/training:0.1.0 .

install-check: venv ## The package from wheels alone in a fresh environment; deploys from outside (~2 min)
	$(VENV)/bin/pytest -q -m install tests/install

test: venv browser ## All tests (real weed mini, valkey, gRPC with mTLS, Celery worker, chromium)
	$(VENV)/bin/pytest -q

browser: ## Debian's chromium for the review app's browser test (installed when root can)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		timeout 300 apt-get update -q >/dev/null && \
		timeout 600 apt-get install -y -q chromium >/dev/null; } || \
		echo "no chromium: the browser test will be skipped (apt-get install chromium)"

demo: venv ## Start the embedded platform and exercise it
	$(VENV)/bin/medxiaohe demo

met: venv ## Build the Medical Entity Tree into the local store (about 35 s)
	$(VENV)/bin/medxiaohe met build

train-ner: venv ## Fine-tune the NER model on NCBI-disease + BC5CDR from ../shared/data (~20 min, 2 cores)
	HF_HUB_OFFLINE=1 $(VENV)/bin/medxiaohe-train ner --config training-jobs/medxiaohe_training/configs/ner.yaml

train-small: venv ## Train the small model from ../shared/data: CPT, SFT, figures (~25 min, 2 cores)
	$(VENV)/bin/medxiaohe met stats >/dev/null 2>&1 || $(VENV)/bin/medxiaohe met build >/dev/null
	HF_HUB_OFFLINE=1 MEDXIAOHE_LOG_LEVEL=WARNING $(VENV)/bin/medxiaohe-train small --config training-jobs/medxiaohe_training/configs/small.yaml
	$(VENV)/bin/medxiaohe model show models/small

rl-small: venv ## GRPO on the small model (after train-small), held-out figures, models/rl
	HF_HUB_OFFLINE=1 MEDXIAOHE_LOG_LEVEL=WARNING $(VENV)/bin/medxiaohe-train rl --config training-jobs/medxiaohe_training/configs/rl-small.yaml
	$(VENV)/bin/medxiaohe model show models/rl

eval-suite: venv ## Score models/small (after train-small) on every suite, clean subsets beside; resumable
	$(VENV)/bin/medxiaohe decontaminate --name small --source raw:cpt --source dataset:small --source mixture:small \
		--source chat:synthesis/small:train.jsonl --source chat:sft-data/small:train.jsonl
	HF_HUB_OFFLINE=1 $(VENV)/bin/medxiaohe eval suite --run $(or $(RUN),small-zero-shot) \
		--model $(or $(MODEL),models/small) --decontamination small --concurrency 8 \
		--out .medxiaohe/eval/$(or $(RUN),small-zero-shot)

eval-grounding: venv ## Verifier on paraphrased IU X-ray train/val reports with injected errors, beside token overlap
	$(VENV)/bin/medxiaohe met stats >/dev/null 2>&1 || $(VENV)/bin/medxiaohe met build >/dev/null
	@for split in train val; do \
		MEDXIAOHE_LOG_LEVEL=WARNING $(VENV)/bin/medxiaohe eval grounding --split $$split \
			--tune-split $$([ $$split = train ] && echo val || echo train) || exit 1; \
	done

eval-rubric: venv ## Rubric grader on the shared HealthBench examples: the tune half, then the held-out half
	$(VENV)/bin/medxiaohe met stats >/dev/null 2>&1 || $(VENV)/bin/medxiaohe met build >/dev/null
	@for split in tune heldout; do for level in all cluster example; do \
		HF_HUB_OFFLINE=1 MEDXIAOHE_LOG_LEVEL=WARNING $(VENV)/bin/medxiaohe eval rubric \
			--grader $(or $(GRADER),deterministic) --split $$split --level $$level || exit 1; \
	done; done

figures: venv ## Every CPU-sized figure (small model, RL, decontamination, mixture, rubric, grounding, extraction): one JSON and one table (~45 min)
	$(VENV)/bin/medxiaohe met stats >/dev/null 2>&1 || $(VENV)/bin/medxiaohe met build >/dev/null
	HF_HUB_OFFLINE=1 MEDXIAOHE_LOG_LEVEL=WARNING $(VENV)/bin/medxiaohe figures

bench-decontaminate: venv ## Benchmark-overlap scan vs joined n-gram lookup on the ingested corpus
	$(VENV)/bin/medxiaohe bench decontaminate --dataset $(or $(DATASET),small)

bench-tagging: venv ## Tagger vs spaCy PhraseMatcher and medspaCy (creates .venv-medspacy once)
	$(VENV)/bin/medxiaohe met stats >/dev/null 2>&1 || $(VENV)/bin/medxiaohe met build >/dev/null
	$(VENV)/bin/medxiaohe bench tagging

bench-ingest: venv ## Ingest pipeline vs datatrove (creates .venv-datatrove once)
	$(VENV)/bin/medxiaohe met stats >/dev/null 2>&1 || $(VENV)/bin/medxiaohe met build >/dev/null
	$(VENV)/bin/medxiaohe bench ingest

bench-mixture: venv ## Balanced mixture vs uniform on the shared corpus, sampler overhead, synthesis
	$(VENV)/bin/medxiaohe met stats >/dev/null 2>&1 || $(VENV)/bin/medxiaohe met build >/dev/null
	HF_HUB_OFFLINE=1 $(VENV)/bin/medxiaohe bench mixture

gpu-check: venv ## On a GPU machine (at most 8 min): CPT ZeRO-3 on ~1B (tokens/s, MFU), GRPO on ~0.5B, predictor vs raw generate
	HF_HUB_OFFLINE=1 MEDXIAOHE_LOG_LEVEL=WARNING timeout 480 $(PY) -m benchmarks.gpu_check

bench-serving: venv ## Predictor over HTTP vs raw model.generate, and at concurrency 8 (~3 min)
	HF_HUB_OFFLINE=1 $(VENV)/bin/medxiaohe bench serving

# RELIABILITY_ARGS="--work DIR" keeps the servers' data and logs (a crash's traceback is there)
bench-reliability: venv ## Faults, fuzz, load and concurrency against real servers on 127.0.0.1 (~20 min)
	HF_HUB_OFFLINE=1 MEDXIAOHE_LOG_LEVEL=ERROR timeout 1800 $(VENV)/bin/medxiaohe bench reliability $(RELIABILITY_ARGS)

clean: ## Remove the venv and local state
	rm -rf $(VENV) .venv-medspacy .venv-datatrove .medxiaohe .mypy_cache .ruff_cache .pytest_cache
