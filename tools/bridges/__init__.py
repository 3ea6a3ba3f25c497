"""Microscope bridges: programs that take frames from acquisition software and publish them
with `protocols.client.FramePublisher` (`actionloop bridge ...`)."""
