"""The ACS real-time voice agent, without Flask: protocol, frames, stages, engines, handlers."""
