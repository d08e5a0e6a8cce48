#!/usr/bin/env python3
"""Regenerate the seed corpora in fuzz/corpus/<target>/ (small, realistic inputs).

Plists are the shapes the tests and the MDM/device-side briefs quote (Apple's example
responses, libusbmuxd's Attached/DeviceList, lockdownd replies); YAML and JSON seeds are
copies of the files under trials/. Run from the repository root: python3 fuzz/make-seeds.py
"""
import json
import os
import plistlib
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
UDID = "00008020-000915083C80012E"
UUID = "0D9B5C61-7E8A-4C1B-9E0B-1B2C3D4E5F60"


def xml(d):
    return plistlib.dumps(d, fmt=plistlib.FMT_XML)


def binary(d):
    return plistlib.dumps(d, fmt=plistlib.FMT_BINARY)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, name, src):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(os.path.join(ROOT, src), os.path.join(d, name))


def mux(payload, version=1, message=8, tag=1):
    return struct.pack("<IIII", 16 + len(payload), version, message, tag) + payload


def lockdown(payload):
    return struct.pack(">I", len(payload)) + payload


# usbmuxd (device-side brief §1.3-1.5)
props = {
    "ConnectionSpeed": 480000000,
    "ConnectionType": "USB",
    "DeviceID": 7,
    "LocationID": 65541,
    "ProductID": 0x12A8,
    "SerialNumber": "00008030001A2D3E0C12802E",
}
attached = {"DeviceID": 7, "MessageType": "Attached", "Properties": props}
put("usbmux_frame", "attached.bin", mux(xml(attached)))
put("usbmux_frame", "detached.bin", mux(xml({"DeviceID": 7, "MessageType": "Detached"})))
put("usbmux_frame", "paired.bin", mux(binary({"DeviceID": 7, "MessageType": "Paired"})))
put("usbmux_frame", "result.bin", mux(xml({"MessageType": "Result", "Number": 0}), tag=3))
put("usbmux_frame", "devicelist.bin", mux(xml({"DeviceList": [attached, attached]})))
put(
    "usbmux_frame",
    "two-frames.bin",
    mux(xml({"MessageType": "Result", "Number": 0})) + mux(binary(attached), tag=2),
)
put("usbmux_frame", "binary-protocol.bin", mux(struct.pack("<I", 0), version=0, message=1))

# lockdownd (device-side brief §3)
put("lockdown_frame", "querytype.bin", lockdown(xml({"Request": "QueryType", "Type": "com.apple.mobile.lockdown"})))
put("lockdown_frame", "getvalue.bin", lockdown(xml({"Request": "GetValue", "Key": "ProductVersion", "Value": "17.5.1"})))
put("lockdown_frame", "error.bin", lockdown(xml({"Request": "StartSession", "Error": "InvalidHostID"})))
put("lockdown_frame", "session.bin", lockdown(binary({"Request": "StartSession", "SessionID": UUID, "EnableSessionSSL": True})))
pair = {
    "DeviceCertificate": b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "EscrowBag": b"\x00\x01\x02",
    "HostCertificate": b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",
    "HostID": "2B7E6F0C-1111-2222-3333-444455556666",
    "HostPrivateKey": b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    "RootCertificate": b"-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n",
    "RootPrivateKey": b"-----BEGIN PRIVATE KEY-----\nMIIF\n-----END PRIVATE KEY-----\n",
    "SystemBUID": "A1B2C3D4-0000-1111-2222-333344445555",
    "WiFiMACAddress": "02:11:22:33:44:55",
    "UDID": UDID,
}
put("lockdown_frame", "pair-record.plist", binary(pair))
put("lockdown_frame", "pair-record.xml", xml(pair))

# MDM reports (MDM brief §1-2: Apple's example responses)
put("mdm_report", "schedule.plist", xml({
    "CommandUUID": UUID, "Status": "Acknowledged", "UDID": UDID,
    "UpdateResults": [{"InstallAction": "DownloadOnly", "ProductKey": "iOSUpdate17A576", "Status": "Downloading"}],
}))
put("mdm_report", "status.plist", xml({
    "CommandUUID": UUID, "Status": "Acknowledged", "UDID": UDID,
    "OSUpdateStatus": [{"DownloadPercentComplete": 0.5030184984207153, "IsDownloaded": False,
                        "ProductKey": "iOSUpdate17A576", "Status": "Downloading"}],
}))
put("mdm_report", "status-ios11-int.plist", xml({
    "CommandUUID": UUID, "Status": "Acknowledged", "UDID": UDID,
    "OSUpdateStatus": [{"DownloadPercentComplete": 50, "IsDownloaded": 1,
                        "ProductKey": "iOSUpdate15E216", "Status": "Installing"}],
}))
put("mdm_report", "available.plist", xml({
    "CommandUUID": UUID, "Status": "Acknowledged", "UDID": UDID,
    "AvailableOSUpdates": [{"AllowsInstallLater": False, "Build": "17A576", "DownloadSize": 251607570,
                            "HumanReadableName": "iOS 13.0", "InstallSize": 1809842176, "IsCritical": False,
                            "ProductKey": "iOSUpdate17A576", "ProductName": "iOS", "RestartRequired": True,
                            "Version": "13.0"}],
}))
put("mdm_report", "error.plist", binary({
    "CommandUUID": UUID, "Status": "Error", "UDID": UDID,
    "ErrorChain": [{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
                    "LocalizedDescription": "Unknown command", "USEnglishDescription": "Unknown command"}],
}))
put("mdm_report", "idle.plist", xml({"Status": "Idle", "UDID": UDID}))
put("mdm_report", "info.plist", xml({
    "CommandUUID": UUID, "Status": "Acknowledged", "UDID": UDID,
    "QueryResponses": {"OSVersion": "17.5.1", "BuildVersion": "21F90", "BatteryLevel": 0.87,
                       "IsSupervised": True, "AvailableDeviceCapacity": 21.3},
}))

# Check-ins (MDM brief §4)
put("mdm_checkin", "authenticate.plist", xml({
    "MessageType": "Authenticate", "Topic": "com.apple.mgmt.External.0000", "UDID": UDID,
    "OSVersion": "17.5", "BuildVersion": "21F79", "ProductName": "iPhone15,2", "SerialNumber": "F00",
}))
put("mdm_checkin", "tokenupdate.plist", xml({
    "MessageType": "TokenUpdate", "Topic": "com.apple.mgmt.External.0000", "UDID": UDID,
    "Token": b"\xde\xad\xbe\xef", "PushMagic": "fakePushMagic", "UnlockToken": b"\x01",
    "AwaitingConfiguration": True,
}))
put("mdm_checkin", "checkout.plist", binary({"MessageType": "CheckOut", "Topic": "com.apple.mgmt.External.0000", "UDID": UDID}))
put("mdm_checkin", "user.plist", xml({"MessageType": "UserAuthenticate", "EnrollmentID": "E1"}))

# Enqueued commands (MDM brief §1, §5.1)
put("mdm_envelope", "schedule.plist", xml({
    "CommandUUID": UUID,
    "Command": {"RequestType": "ScheduleOSUpdate",
                "Updates": [{"InstallAction": "DownloadOnly", "ProductKey": "iOSUpdate17A576",
                             "ProductVersion": "17.6"}]},
}))
put("mdm_envelope", "status.plist", xml({"CommandUUID": UUID, "Command": {"RequestType": "OSUpdateStatus"}}))
put("mdm_envelope", "available.plist", binary({"CommandUUID": UUID, "Command": {"RequestType": "AvailableOSUpdates"}}))
put("mdm_envelope", "info.plist", xml({
    "CommandUUID": UUID,
    "Command": {"RequestType": "DeviceInformation", "Queries": ["OSVersion", "BuildVersion", "BatteryLevel"]},
}))
put("mdm_envelope", "security.plist", xml({"CommandUUID": UUID, "Command": {"RequestType": "SecurityInfo"}}))

# Webhooks (MDM brief §5.1)
import base64
raw = xml({"Status": "Acknowledged", "UDID": UDID, "CommandUUID": UUID})
put("webhook_json", "acknowledge.json", json.dumps({
    "topic": "mdm.Connect", "event_id": "abc", "created_at": "2026-08-17T10:00:00Z",
    "acknowledge_event": {"udid": UDID, "status": "Acknowledged", "command_uuid": UUID,
                          "raw_payload": base64.b64encode(raw).decode(),
                          "ids": {"id": UDID, "type": "Device"}},
}))
put("webhook_json", "checkin.json", json.dumps({
    "topic": "mdm.TokenUpdate", "event_id": "", "created_at": "2026-08-17T10:00:00Z",
    "checkin_event": {"udid": UDID, "url_params": {"a": "b"},
                      "raw_payload": base64.b64encode(xml({"MessageType": "TokenUpdate", "UDID": UDID})).decode(),
                      "ids": {"id": UDID, "parent_id": "P", "type": "Device"}, "token_update_tally": 1},
}))

# YAML and JSON inputs from trials/
copy("trial_protocol", "rehearsal.yaml", "trials/rehearsal.yaml")
copy("trial_protocol", "quirks.yaml", "trials/quirks.yaml")
put("trial_protocol", "bench.yaml", """id: bench-1
title: Real bench
lab: { usbmuxd: ["UNIX:/var/run/usbmuxd", "10.0.0.2:27015"], mdm: { kind: nanomdm, url: "http://127.0.0.1:9000", api_key_env: NANOMDM_API_KEY } }
target: { product_version: "17.6" }
arms:
  - { name: a, install_action: InstallASAP }
  - { name: a, install_action: Default }
""")
copy("sim_fleet", "bench-5.yaml", "trials/fleets/bench-5.yaml")
copy("sim_fleet", "quirks.yaml", "trials/fleets/quirks.yaml")
copy("sim_fleet", "rehearsal-12.yaml", "trials/fleets/rehearsal-12.yaml")
copy("feed_gdmf", "pmv.json", "trials/feeds/gdmf-pmv.json")
copy("feed_ipsw", "iPhone12,1.json", "trials/feeds/ipsw-iPhone12,1.json")
put("sim_fleet", "serial-non-ascii.yaml", """devices:
  - name: A
    product_type: iPhone12,1
    serial: "ééé"
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 87 }
""")

# Deep nesting (issue 18): plists just past the depth limit (plist_util::MAX_PLIST_DEPTH = 64)
# and far past it, in XML (arrays and dicts) and binary, framed for the frame targets; a binary
# plist whose arrays share children (exponential expansion); deep JSON and YAML.
def deep_xml(depth, dicts=False):
    o, c = ("<dict><key>k</key>", "</dict>") if dicts else ("<array>", "</array>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">'
            + o * depth + "<string>x</string>" + c * depth + "</plist>").encode()


def deep_binary(depth, shared=False):
    # Hand-written bplist00: plistlib's writer would recurse as deep.
    out = bytearray(b"bplist00")
    offsets = []
    ref = 1 if depth + 1 <= 0xFF else 2
    for i in range(depth):
        offsets.append(len(out))
        if shared:
            out += bytes([0xA2]) + (i + 1).to_bytes(ref, "big") * 2
        else:
            out += bytes([0xA1]) + (i + 1).to_bytes(ref, "big")
    offsets.append(len(out))
    out += b"\x51x"
    table = len(out)
    for o in offsets:
        out += o.to_bytes(2, "big")
    out += bytes(6) + bytes([2, ref])
    out += struct.pack(">QQQ", len(offsets), 0, table)
    return bytes(out)


for depth in (65, 1000):
    for target in ("mdm_report", "mdm_checkin", "mdm_envelope"):
        put(target, f"deep-{depth}.plist", deep_xml(depth))
        put(target, f"deep-dicts-{depth}.plist", deep_xml(depth, dicts=True))
        put(target, f"deep-{depth}.bplist", deep_binary(depth))
    put("lockdown_frame", f"deep-{depth}.bin", lockdown(deep_xml(depth)))
    put("lockdown_frame", f"deep-{depth}-binary.bin", lockdown(deep_binary(depth)))
    put("usbmux_frame", f"deep-{depth}.bin", mux(deep_xml(depth)))
    put("usbmux_frame", f"deep-{depth}-binary.bin", mux(deep_binary(depth)))
for target in ("mdm_report", "lockdown_frame"):
    put(target, "shared-40.bplist", deep_binary(40, shared=True))
deep_json = "[" * 1000 + "]" * 1000
put("webhook_json", "deep.json", '{"topic": "mdm.Connect", "extra": ' + deep_json + "}")
put("webhook_json", "deep-raw-payload.json", json.dumps({
    "topic": "mdm.Connect", "event_id": "", "created_at": "2026-08-17T10:00:00Z",
    "acknowledge_event": {"udid": UDID, "status": "Acknowledged", "command_uuid": UUID,
                          "raw_payload": base64.b64encode(deep_xml(1000)).decode(),
                          "ids": {"id": UDID, "type": "Device"}},
}))
put("feed_gdmf", "deep.json", deep_json)
put("feed_ipsw", "deep.json", deep_json)
put("sim_fleet", "deep-flow.yaml", "devices: " + "[" * 1000 + "]" * 1000 + "\n")
put("sim_fleet", "deep-block.yaml", "devices:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(200)))
put("trial_protocol", "deep-flow.yaml", "id: x\narms: " + "[" * 1000 + "]" * 1000 + "\n")
