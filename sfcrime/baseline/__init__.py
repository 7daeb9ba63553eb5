"""The batch baseline: the same answers from a plain Spark batch job over the calls file, which the streaming
job is benchmarked against (bench/) and cross-checked with. Not shipped to executors with the job."""
