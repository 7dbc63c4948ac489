"""Channels and the processes that run them, laid out by part:

config/        the YAML schema and how a file is read and checked
conversation/  a channel's talking half: turns, persona and memory, answers, listening
chat/          live chat: IRC, commands, moderation, the question queue
worker/        a media worker: channels on air (Program, encoder, outputs, WebRTC), their routes
front/         the one public port: pages, admin API, health and metrics of every worker
cli.py         the `avatarcast` command
"""
