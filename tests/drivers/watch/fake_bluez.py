"""A fake ``org.bluez`` on a private D-Bus: enough of BlueZ for bleak's real BlueZ backend.

Exports an adapter (``/org/bluez/hci0``, Adapter1), one watch (Device1) and its GATT table
(GattService1, GattCharacteristic1); dbus-fast answers ObjectManager.GetManagedObjects and
sends InterfacesAdded/Removed and PropertiesChanged. "Advertising" is an RSSI change while
discovery is on; "a notification" is a change of a characteristic's ``Value``; "walking
away" is ``Connected`` going false. ``RemoveDevice`` forgets the device until it is
discovered again, as BlueZ does. Semantics follow the BlueZ D-Bus API docs
(https://github.com/bluez/bluez/tree/master/doc: org.bluez.Adapter, .Device, .GattCharacteristic).

No ``from __future__ import annotations`` here: dbus-fast reads the signatures from them.
"""

import asyncio

from dbus_fast import BusType, DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method

R = PropertyAccess.READ


class Adapter(ServiceInterface):
    def __init__(self, fake):
        super().__init__("org.bluez.Adapter1")
        self.fake = fake
        self.discovering = False

    @dbus_property(access=R)
    def Address(self) -> "s":
        return "00:1A:7D:DA:71:13"

    @dbus_property(access=R)
    def Name(self) -> "s":
        return "carehub-test"

    @dbus_property(access=R)
    def Alias(self) -> "s":
        return "carehub-test"

    @dbus_property(access=R)
    def Powered(self) -> "b":
        return True

    @dbus_property(access=R)
    def Discovering(self) -> "b":
        return self.discovering

    @dbus_property(access=R)
    def Roles(self) -> "as":
        return ["central", "peripheral"]

    @dbus_property(access=R)
    def UUIDs(self) -> "as":
        return []

    @method()
    def SetDiscoveryFilter(self, properties: "a{sv}"):
        self.fake.calls.append("SetDiscoveryFilter")

    @method()
    def GetDiscoveryFilters(self) -> "as":
        return ["UUIDs", "RSSI", "Transport", "DuplicateData"]

    @method()
    def StartDiscovery(self):
        self.fake.calls.append("StartDiscovery")
        if self.discovering:
            raise DBusError("org.bluez.Error.InProgress", "Operation already in progress")
        self.discovering = True
        self.emit_properties_changed({"Discovering": True})

    @method()
    def StopDiscovery(self):
        self.fake.calls.append("StopDiscovery")
        if not self.discovering:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        self.discovering = False
        self.emit_properties_changed({"Discovering": False})

    @method()
    def RemoveDevice(self, device: "o"):
        self.fake.calls.append("RemoveDevice")
        self.fake.forget()


class Device(ServiceInterface):
    def __init__(self, fake):
        super().__init__("org.bluez.Device1")
        self.fake = fake
        self.connected = False
        self.resolved = False
        self.rssi = -60

    @dbus_property(access=R)
    def Address(self) -> "s":
        return self.fake.address

    @dbus_property(access=R)
    def AddressType(self) -> "s":
        return "public"

    @dbus_property(access=R)
    def Name(self) -> "s":
        return self.fake.name

    @dbus_property(access=R)
    def Alias(self) -> "s":
        return self.fake.name

    @dbus_property(access=R)
    def Adapter(self) -> "o":
        return "/org/bluez/hci0"

    @dbus_property(access=R)
    def UUIDs(self) -> "as":
        return [s for s, _ in self.fake.layout]

    @dbus_property(access=R)
    def RSSI(self) -> "n":
        return self.rssi

    @dbus_property(access=R)
    def Connected(self) -> "b":
        return self.connected

    @dbus_property(access=R)
    def ServicesResolved(self) -> "b":
        return self.resolved

    @dbus_property(access=R)
    def Paired(self) -> "b":
        return False

    @dbus_property(access=R)
    def Bonded(self) -> "b":
        return False

    @dbus_property(access=R)
    def Trusted(self) -> "b":
        return False

    @dbus_property(access=R)
    def Blocked(self) -> "b":
        return False

    @dbus_property(access=R)
    def LegacyPairing(self) -> "b":
        return False

    @dbus_property(access=R)
    def ServiceData(self) -> "a{sv}":
        return {}

    @dbus_property(access=R)
    def ManufacturerData(self) -> "a{qv}":
        return {}

    @method()
    async def Connect(self):
        self.fake.calls.append("Connect")
        if self.fake.connect_errors:
            name, text = self.fake.connect_errors.pop(0)
            raise DBusError(name, text)
        if not self.fake.in_range:
            raise DBusError("org.bluez.Error.Failed", "Page Timeout")
        if self.connected:
            raise DBusError("org.bluez.Error.AlreadyConnected", "Already Connected")
        await asyncio.sleep(0)
        self.fake.connects += 1
        self.set_link(True)

    @method()
    def Disconnect(self):
        self.fake.calls.append("Disconnect")
        if not self.connected:
            raise DBusError("org.bluez.Error.NotConnected", "Not Connected")
        self.set_link(False)

    def set_link(self, up: bool) -> None:
        if not up:
            for ch in self.fake.chars.values():
                if ch.notifying:
                    ch.notifying = False
                    ch.emit_properties_changed({"Notifying": False})
        self.connected = up
        self.emit_properties_changed({"Connected": up})
        self.resolved = up
        self.emit_properties_changed({"ServicesResolved": up})


class Service(ServiceInterface):
    def __init__(self, uuid, device_path):
        super().__init__("org.bluez.GattService1")
        self.uuid, self.device_path = uuid, device_path

    @dbus_property(access=R)
    def UUID(self) -> "s":
        return self.uuid

    @dbus_property(access=R)
    def Device(self) -> "o":
        return self.device_path

    @dbus_property(access=R)
    def Primary(self) -> "b":
        return True


class Characteristic(ServiceInterface):
    def __init__(self, fake, uuid, service_path, value=b""):
        super().__init__("org.bluez.GattCharacteristic1")
        self.fake, self.uuid, self.service_path = fake, uuid, service_path
        self.value = bytes(value)
        self.notifying = False

    @dbus_property(access=R)
    def UUID(self) -> "s":
        return self.uuid

    @dbus_property(access=R)
    def Service(self) -> "o":
        return self.service_path

    @dbus_property(access=R)
    def Flags(self) -> "as":
        return ["read", "notify"]

    @dbus_property(access=R)
    def Value(self) -> "ay":
        return self.value

    @dbus_property(access=R)
    def Notifying(self) -> "b":
        return self.notifying

    @dbus_property(access=R)
    def MTU(self) -> "q":
        return 23

    def _check(self):
        if not self.fake.device.connected:
            raise DBusError("org.bluez.Error.Failed", "Not connected")

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":
        self._check()
        return self.value

    @method()
    def WriteValue(self, value: "ay", options: "a{sv}"):
        self._check()
        self.value = bytes(value)

    @method()
    def StartNotify(self):
        self._check()
        self.fake.calls.append("StartNotify")
        self.notifying = True
        self.emit_properties_changed({"Notifying": True})

    @method()
    def StopNotify(self):
        self.notifying = False
        self.emit_properties_changed({"Notifying": False})


class FakeBlueZ:
    """The fake daemon; call ``start()`` inside the loop, with DBUS_SYSTEM_BUS_ADDRESS set."""

    def __init__(self, address, layout, name="CareWatch", values=None):
        self.address = address.upper()
        self.name = name
        self.layout = layout            # [(service uuid, [char uuid, ...]), ...]
        self.values = values or {}
        self.path = "/org/bluez/hci0/dev_" + self.address.replace(":", "_")
        self.in_range = True
        self.duplicate_notifications = False
        self.connect_errors = []        # [(D-Bus error name, text)] for the next Connects
        self.connects = 0
        self.calls = []
        self.removed = False
        self.bus = None
        self.adapter = Adapter(self)
        self.device = Device(self)
        self.chars = {}
        self._objects = []
        self._advertiser = None

    async def start(self):
        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self.bus.export("/org/bluez/hci0", self.adapter)
        self._export_device()
        await self.bus.request_name("org.bluez")
        self._advertiser = asyncio.ensure_future(self._advertise())

    def _export_device(self):
        self.bus.export(self.path, self.device)
        self._objects = [(self.path, self.device)]
        handle = 0x0a
        for suuid, chars in self.layout:
            spath = f"{self.path}/service{handle:04x}"
            svc = Service(suuid, self.path)
            self.bus.export(spath, svc)
            self._objects.append((spath, svc))
            handle += 1
            for cuuid in chars:
                cpath = f"{spath}/char{handle:04x}"
                ch = self.chars.get(cuuid) or Characteristic(self, cuuid, spath, self.values.get(cuuid, b""))
                ch.service_path = spath
                self.chars[cuuid] = ch
                self.bus.export(cpath, ch)
                self._objects.append((cpath, ch))
                handle += 2
        self.removed = False

    def forget(self):
        """RemoveDevice: the object and its GATT table disappear (InterfacesRemoved)."""
        if self.removed:
            return
        if self.device.connected:
            self.device.set_link(False)
        for path, iface in reversed(self._objects):
            self.bus.unexport(path, iface)
        self.removed = True

    async def _advertise(self):
        while True:
            await asyncio.sleep(0.05)
            if not (self.in_range and self.adapter.discovering) or self.device.connected:
                continue
            if self.removed:            # discovered again
                self._export_device()
            self.device.rssi = -60 if self.device.rssi != -60 else -61
            self.device.emit_properties_changed({"RSSI": self.device.rssi})

    # --- what the test makes the watch do ----------------------------------------------
    def notify(self, uuid, data):
        ch = self.chars[uuid]
        if not (self.device.connected and ch.notifying):
            return False
        ch.value = bytes(data)
        for _ in range(2 if self.duplicate_notifications else 1):
            ch.emit_properties_changed({"Value": ch.value})
        return True

    def walk_away(self):
        self.in_range = False
        if self.device.connected:
            self.device.set_link(False)

    def come_back(self):
        self.in_range = True

    async def stop(self):
        if self._advertiser is not None:
            self._advertiser.cancel()
        if self.bus is not None:
            self.bus.disconnect()


BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""
