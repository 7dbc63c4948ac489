"""A media worker: the channels of one process, on air (Program, encoder, outputs, WebRTC peers),
the model services they share in it, and the HTTP routes of those channels."""
