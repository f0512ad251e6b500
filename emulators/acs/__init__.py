"""The ACS emulator: Azure Communication Services Call Automation on this machine.

``python -m emulators.acs`` serves, over HTTPS with a certificate it makes at start:

- the Call Automation REST routes the real ``azure-communication-callautomation`` SDK calls
  (answer, create, hang up, start/stop media streaming, play), HMAC-signed as ACS checks them
  (:mod:`emulators.acs.hmac_auth`);
- ``/calling/keys``: the JWKS of the RS256 key it signs its own ACS tokens with
  (:mod:`emulators.acs.tokens`), so Conduit verifies callbacks and the media socket exactly as it
  would against ACS;
- ``/_emulator/acs/calls``: place a call. The emulator rings Conduit (an Event Grid
  IncomingCall), and once answered posts the callbacks, opens the media WebSocket with a JWT and
  plays a scripted caller (:mod:`emulators.acs.caller`), then writes a call report.

It imports only settings/ and the OpenAI emulator's speech helpers, never voice/ or web/.
"""
