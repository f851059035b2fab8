# Every target creates the virtual environment on first use and installs into it.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-portable lint notebooks train sample bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make test: the whole test suite (kernels through the interpreter on a CPU-only machine), one
## worker process per core (pytest-xdist); JOBS=1 runs it in one process
JOBS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) $(ARGS)

## make test-portable: what macOS and Windows get, checked on Linux: a second environment made
## from requirements.txt without Triton runs the suite and every notebook (the public names are
## the PyTorch twin there; tests of the Triton kernels themselves skip, saying why), then a
## short training run and a sample from it
PORTABLE       ?= .venv-notriton
PORTABLE_STAMP := $(PORTABLE)/.installed
PORTABLE_RUN   := $(PORTABLE)/train-check

$(PORTABLE_STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(PORTABLE)
	$(PORTABLE)/bin/python -m pip install --upgrade pip
	grep -v '^triton' requirements.txt > $(PORTABLE)/requirements.txt
	$(PORTABLE)/bin/python -m pip install -r $(PORTABLE)/requirements.txt
	$(PORTABLE)/bin/python -m pip install --no-deps -e .
	! $(PORTABLE)/bin/python -c "import triton" 2>/dev/null
	touch $(PORTABLE_STAMP)

test-portable: $(PORTABLE_STAMP)
	$(PORTABLE)/bin/python -m pytest -n $(JOBS) $(ARGS)
	$(PORTABLE)/bin/python -m minitransformer.train --steps 40 --warmup 10 --eval-interval 20 --sample-chars 60 \
		--out $(PORTABLE_RUN) --overwrite
	$(PORTABLE)/bin/python -m minitransformer.sample --ckpt $(PORTABLE_RUN)/ckpt.pt --prompt "def " --chars 40

lint: $(STAMP)
	$(BIN)/ruff check .

## make notebooks: Jupyter Lab on the notebook series (ARGS go to jupyter lab, e.g. --no-browser);
## as root, the usual user in a container, Jupyter refuses to start without --allow-root
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
notebooks: $(STAMP)
	$(BIN)/jupyter lab $(ALLOW_ROOT) $(ARGS) notebooks/

## make train: train the mini Transformer (about 2 minutes on a 2-core CPU, under a minute on a GPU)
train: $(STAMP)
	$(BIN)/python -m minitransformer.train $(ARGS)

## make sample: generate text from the checkpoint of `make train`
sample: $(STAMP)
	$(BIN)/python -m minitransformer.sample --prompt "def " $(ARGS)

## make bench: on a CUDA GPU, the kernel against PyTorch's attention backends (with peak memory
## and FlexAttention), decoding, training memory, and linear against softmax attention
RESULTS ?= benchmarks/results/$(shell $(BIN)/python -c "import torch; print(torch.cuda.get_device_name().split()[1].lower() if torch.cuda.is_available() else 'cpu')" 2>/dev/null)
bench: $(STAMP)  # the attention sweep last: its table of ratios ends the output
	$(BIN)/python -m benchmarks.bench_decode --out $(RESULTS)
	$(BIN)/python -m benchmarks.train_memory --out $(RESULTS)
	$(BIN)/python -m benchmarks.bench_linear --out $(RESULTS)
	$(BIN)/python -m benchmarks.bench_attention --memory --out $(RESULTS)

clean:
	rm -rf $(VENV) $(PORTABLE) .pytest_cache .ruff_cache
