"""Channels and the things that drive them: config, speech turns, the web server and the CLI."""
