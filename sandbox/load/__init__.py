"""The load generator: realistic participant mixes through the gateway, with a low, configurable
rate of AML typologies whose alerts the summary attributes (`fintech-sandbox load`).

The locustfile runs in its own process (`python -m locust`), so gevent's monkeypatching never
enters the CLI; the two talk through a manifest file and Locust's CSV stats."""
