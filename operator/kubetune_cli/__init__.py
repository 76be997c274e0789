"""The `kubetune` command line: FineTuneJobs from flags, their state, logs and artifacts."""
