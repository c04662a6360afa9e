# Shortcuts for the commands the README documents. `make help` lists them.
.PHONY: help build run test bench bench-all loadtest loadtest-hostile deploy-check image ci

help:
	@echo "make build         release build of the engine (target/release/liveops)"
	@echo "make run           run the engine: ports 8080-8083, ENV=dev defaults, .env if present"
	@echo "make test          the README's test command: cargo test --workspace"
	@echo "make bench         criterion benches (cargo bench --workspace)"
	@echo "make bench-all     every figure of BENCHMARKS.md (bench/run-all.sh, ~12 min)"
	@echo "make loadtest      a fresh release engine under a few seconds of signed load"
	@echo "make loadtest-hostile  the hostile mix of BENCHMARKS.md"
	@echo "make deploy-check  Prometheus rules and tests, dashboard, Dockerfile, k8s manifests"
	@echo "make image         docker build (needs a Docker engine)"
	@echo "make ci            exactly what CI runs (.ci/run)"

build:
	cargo build --release -p liveops-net

run:
	cargo run --release

test:
	cargo test --workspace

bench:
	cargo bench --workspace

bench-all:
	bash bench/run-all.sh

loadtest:
	bash loadtest/smoke.sh

loadtest-hostile:
	bash loadtest/hostile.sh

deploy-check:
	bash deploy/check.sh

image:
	docker build -f deploy/Dockerfile -t liveops-guard .

ci:
	bash .ci/run
