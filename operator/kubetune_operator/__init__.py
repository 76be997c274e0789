"""Kubetune operator: reconciles FineTuneJob objects into trainer and export Jobs."""
