# Placeholder: the Collector and Jaeger build targets (see collector-config/).
tools:
	@true
