"""On-the-wire provider tests: real vendor SDKs against local fake servers."""
