# The two commands a newcomer needs (see README):
#   make serve   install what is missing, then start the embedded stack on loopback
#   make test    install what is missing, then run every test (what CI runs)
.PHONY: serve test install unit e2e bench lint clean

serve: install
	.venv/bin/binder-prebuild up

test: install
	.venv/bin/python -m pytest -p no:cacheprovider -ra

install:
	bash scripts/install.sh

unit: install
	.venv/bin/python -m pytest -m "not e2e and not hub" -ra

e2e: install
	.venv/bin/python -m pytest -m e2e -ra -s

bench: install
	.venv/bin/python benchmarks/webhook_ack.py
	.venv/bin/python benchmarks/k8s_builds.py
	.venv/bin/python benchmarks/launch_overhead.py

clean:
	-bash scripts/local-engine.sh down
	rm -rf .cache data
