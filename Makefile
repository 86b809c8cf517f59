# Two commands matter: `make serve` and `make test`. Everything else is a step they use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
PKG_DIRS := allmicro_data ingest api storage

.PHONY: serve test lint typecheck pytest install bench clean web debian-tools messages

# The venv is rebuilt when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Front-end packages come from npm, pinned by package-lock.json, copied into the static folder.
WEB_VENDOR := api/web/static/vendor
WEB_STAMP := $(WEB_VENDOR)/.installed
OSD_BUILD := node_modules/openseadragon/build/openseadragon
$(WEB_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	rm -rf $(WEB_VENDOR) && mkdir -p $(WEB_VENDOR)/openseadragon
	cp -R $(OSD_BUILD)/openseadragon.min.js $(OSD_BUILD)/openseadragon.min.js.map $(OSD_BUILD)/images node_modules/openseadragon/LICENSE.txt $(WEB_VENDOR)/openseadragon/
	mkdir -p $(WEB_VENDOR)/swagger-ui $(WEB_VENDOR)/redoc
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css node_modules/swagger-ui-dist/favicon-32x32.png node_modules/swagger-ui-dist/LICENSE $(WEB_VENDOR)/swagger-ui/
	cp node_modules/redoc/bundles/redoc.standalone.js node_modules/redoc/LICENSE $(WEB_VENDOR)/redoc/
	mkdir -p $(WEB_VENDOR)/tus-js-client && cp node_modules/tus-js-client/dist/tus.min.js node_modules/tus-js-client/dist/tus.min.js.map node_modules/tus-js-client/LICENSE $(WEB_VENDOR)/tus-js-client/
	touch $@

web: $(WEB_STAMP)

# The web UI's texts: extract into messages.pot, merge into the it/sl catalogues, then translate
# the new entries. The server compiles the .po files itself when it starts.
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg --no-location --sort-output --project "AllMicro Data" --copyright-holder "AllMicro Data" -o api/web/locale/messages.pot .
	$(BIN)/pybabel update -i api/web/locale/messages.pot -d api/web/locale -w 100 --ignore-obsolete

# The browser tests drive Debian's chromium (never a Playwright-downloaded one); the deploy
# test validates deploy/compose.yaml with Debian's docker-compose (no engine needed); the
# institutional sign-in tests start their own OpenLDAP (slapd, ldap-utils' ldapadd).
debian-tools:
	command -v chromium >/dev/null && command -v docker-compose >/dev/null \
		&& test -x /usr/sbin/slapd && command -v ldapadd >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium docker-compose slapd ldap-utils)

serve: $(STAMP) $(WEB_STAMP)
	$(BIN)/allmicro serve

# mypy and import-linter cannot follow setuptools' package-dir mapping, so they read a tree of
# links that puts ingest/, api/ and storage/ where their import names say they are: $(call link_tree,DIR).
link_tree = mkdir -p $(1)/allmicro_data \
	&& for f in allmicro_data/*; do ln -s "$$PWD/$$f" $(1)/allmicro_data/; done \
	&& for d in ingest api storage; do ln -s "$$PWD/$$d" $(1)/allmicro_data/$$d; done

# The import contracts (pyproject.toml, [tool.importlinter]): the layers of DESIGN.md, an upload
# agent free of server code, workers free of the web framework. Each run has its own tree.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	tree=$$(mktemp -d) && $(call link_tree,$$tree) \
		&& (cd $$tree && $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml); \
		status=$$?; rm -rf "$$tree"; exit $$status

typecheck: $(STAMP)
	rm -rf build/typecheck
	$(call link_tree,build/typecheck)
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml allmicro_data

# Test files run in PYTEST_WORKERS processes (a file stays in one, so its module-scoped live
# server starts once), handed out in collection order: tests/conftest.py puts the longest first.
# Most tests wait on servers, so there are more workers than cores. Each process forks its live
# servers from one that has imported them already (tests/zygote.py; ALLMICRO_TEST_NO_ZYGOTE=1
# starts them as plain subprocesses).
# The 15 slowest tests are printed at the end of every run.
PYTEST_WORKERS ?= 4
pytest: $(STAMP) $(WEB_STAMP) debian-tools
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

# lint and typecheck run beside the tests, in the CPU the test processes leave idle while they
# wait on servers (mypy alone takes half a minute on a fresh clone); any of the three failing
# fails `make test`. Output is kept whole line by line.
test:
	$(MAKE) --no-print-directory --output-sync=line -j3 lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/convert.py

clean:
	rm -rf build $(VENV) .mypy_cache .pytest_cache .ruff_cache node_modules $(WEB_VENDOR)
