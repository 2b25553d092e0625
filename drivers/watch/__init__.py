"""The resident's watch over BLE: pure codecs, a profile-aware decoder, a connection supervisor.

Layers, one file each (as the belt driver): ``gatt``/``bthome``/``pattern`` turn bytes into
frozen dataclasses (``reports``); ``decoder`` applies a ``profiles.Profile`` (which
characteristics mean what, de-duplication, the two-part location fix); ``link`` keeps the
BLE connection alive through bleak and bleak-retry-connector; ``scan`` lists nearby devices;
``recording`` writes and reads ``"source": "watch"`` lines; ``simulator`` is a watch made of
bleak backend classes, for tests, the demo and the benchmark. Nothing here imports hub/.
"""
