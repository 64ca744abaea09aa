# Same as ./dev (see README):
#   make serve   install what is missing, then start the embedded stack on loopback
#   make test    install what is missing, then run every test (what CI runs)
#   make stop    stop what ./dev serve left running
.PHONY: serve test install stop unit e2e bench clean

serve:
	./dev serve

test:
	./dev test

install:
	./dev install

stop:
	./dev stop

unit:
	./dev test -m "not e2e and not hub and not fresh"

e2e:
	./dev test -m e2e -s

bench: install
	.venv/bin/python benchmarks/webhook_ack.py
	.venv/bin/python benchmarks/k8s_builds.py
	.venv/bin/python benchmarks/launch_overhead.py
	.venv/bin/python benchmarks/queue_fairness.py
	.venv/bin/python benchmarks/reconcile.py

clean:
	-bash scripts/local-engine.sh down
	rm -rf .cache data
