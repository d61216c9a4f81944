# Two entry points, each doing all of its own set-up in .venv (see README "Quick start").
PY := .venv/bin/python
STAMP := .venv/.installed
# the venv's tools (ninja, for the fused kernels' first build) before the system's
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: book test export browser-check clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

book: $(STAMP)  ## build the textbook into _build/html (warnings are errors)
	$(PY) tools/execute_notebooks.py
	.venv/bin/jupyter-book build . --warningiserror --keep-going

test: $(STAMP)  ## the package against torch.optim, and every chapter through nbval
	$(PY) -m pytest

browser-check:  ## open every page of _build/html in headless Chromium at 400, 1000 and 1400 px
	python3 .ci/browser_check.py _build/html

export: $(STAMP)  ## regenerate optim_nb/ from the chapters
	.venv/bin/nbdev-export

clean:
	rm -rf _build
