# The two commands of the README.
.PHONY: dev test

# Start one broker on embedded defaults (Kafka on 127.0.0.1:9092, data in ./strata-data).
dev:
	cargo run --release -p strata-broker --bin strata-broker -- dev

# Run the whole test suite (what CI runs).
test:
	bash scripts/test.sh
