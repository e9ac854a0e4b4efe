"""Published OCPP frames with the readings the gateway must make of them.

Each case: source, OCPP version, charge point id, the frame text as published (whitespace
compacted), and every expected (device, metric, value, ts).
"""

from __future__ import annotations

from typing import Any

# 2025-02-21T07:26:31Z, 2024-01-15T10:45:00Z, 2025-08-21T07:03:36.481+00:00
T_FIELD = 1740122791.0
T_RENOZIX = 1705315500.0
T_KEBA = 1755759816.481

VECTORS: list[dict[str, Any]] = [
    {
        # A field capture of a 1.6 MeterValues.req from a three-phase AC charger, published in
        # github.com/maulanahidayatullah/ocpp-node, file log.js. Voltage and current only per
        # phase: voltage is L1-N's (225.10 V), current the largest phase (all 0.00 A); power
        # comes in kW (0.00 kW -> 0 W), energy in Wh.
        "source": "github.com/maulanahidayatullah/ocpp-node log.js (field capture)",
        "version": "1.6",
        "charge_point": "CP1",
        "action": "MeterValues",
        "payload": {
            "connectorId": 1, "transactionId": 12,
            "meterValue": [{"timestamp": "2025-02-21T07:26:31Z", "sampledValue": [
                {"value": "225.10", "context": "Sample.Periodic", "format": "Raw", "measurand": "Voltage", "phase": "L1-N", "location": "Body", "unit": "V"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Current.Import", "phase": "L1-N", "location": "Body", "unit": "A"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Power.Active.Import", "location": "Body", "unit": "kW"},
                {"value": "12", "context": "Sample.Periodic", "format": "Raw", "measurand": "Energy.Active.Import.Register", "location": "Body", "unit": "Wh"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Voltage", "phase": "L2-N", "location": "Body", "unit": "V"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Voltage", "phase": "L3-N", "location": "Body", "unit": "V"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Current.Import", "phase": "L2-N", "location": "Body", "unit": "A"},
                {"value": "0.00", "context": "Sample.Periodic", "format": "Raw", "measurand": "Current.Import", "phase": "L3-N", "location": "Body", "unit": "A"},
            ]}],
        },
        "expected": [
            ("ocpp:CP1/1", "power_active_import", 0.0, T_FIELD),
            ("ocpp:CP1/1", "energy_active_import_register", 12.0, T_FIELD),
            ("ocpp:CP1/1", "voltage", 225.1, T_FIELD),
            ("ocpp:CP1/1", "current_import", 0.0, T_FIELD),
        ],
    },
    {
        # The 2.0.1 MeterValuesRequest example frame of ocpptools.renozix.com/2.0.1/messages/
        # metervalues/ (its transactionId key is not in the 2.0.1 schema; the decoder ignores it).
        "source": "ocpptools.renozix.com/2.0.1/messages/metervalues/ 'Example Full Frame'",
        "version": "2.0.1",
        "charge_point": "CS1",
        "action": "MeterValues",
        "payload": {
            "evseId": 1, "transactionId": "txn-abc123",
            "meterValue": [{"timestamp": "2024-01-15T10:45:00Z", "sampledValue": [
                {"value": 16500, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}},
                {"value": 7.2, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
            ]}],
        },
        "expected": [
            ("ocpp:CS1/1", "energy_active_import_register", 16500.0, T_RENOZIX),
            ("ocpp:CS1/1", "power_active_import", 7200.0, T_RENOZIX),
        ],
    },
    {
        # A Keba P30 2.0.1 TransactionEvent(Started) as logged in github.com/m-hegele/notes,
        # dev/keba-invalid-meter-start-stop.md (values from the log, keys in wire camelCase):
        # a sampled value with neither measurand nor unit is the energy register in Wh, and the
        # timestamp has a "+0000" offset.
        "source": "github.com/m-hegele/notes dev/keba-invalid-meter-start-stop.md (Keba P30 log)",
        "version": "2.0.1",
        "charge_point": "P30_28881628",
        "action": "TransactionEvent",
        "payload": {
            "eventType": "Started", "timestamp": "2025-08-21T07:03:33.373+0000",
            "triggerReason": "Authorized", "seqNo": 0,
            "transactionInfo": {"transactionId": "28881628250821070333100549825004", "chargingState": "SuspendedEV"},
            "meterValue": [{"sampledValue": [{"value": 2114135.6, "context": "Transaction.Begin"}],
                            "timestamp": "2025-08-21T07:03:36.481+0000"}],
            "offline": False, "evse": {"id": 1, "connectorId": 1},
            "idToken": {"idToken": "3A5AA876", "type": "ISO14443"},
        },
        "expected": [
            ("ocpp:P30_28881628/1", "energy_active_import_register", 2114135.6, T_KEBA),
        ],
    },
]
