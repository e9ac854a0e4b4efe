"""Published example payloads, each with its complete expected result and its source.

Values are in the catalog's units (Pa, m/s2, V); the source's own units are noted where they
differ. Ruuvi acceleration: mG x 9.80665 / 1000.
"""

from __future__ import annotations

G = 9.80665 / 1000

RUUVI_DOCS_DF5 = "docs.ruuvi.com/communication/bluetooth-advertisements/data-format-5-rawv2, Test vectors"
RUUVI_DOCS_DF3 = "docs.ruuvi.com/communication/bluetooth-advertisements/data-format-3-rawv1, Test vectors"
RUUVI_ISSUE_30 = "github.com/ruuvi/ruuvi-sensor-protocols issue #30 (corrected DF5 minimum vector)"

# (name, source, payload hex (manufacturer data after 0x0499), sequence, expected readings)
RUUVI = [
    (
        "df5 valid data", RUUVI_DOCS_DF5, "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F", 205,
        {
            "temperature": 24.3, "humidity": 53.49, "pressure": 100044.0,
            "acceleration_x": 4 * G, "acceleration_y": -4 * G, "acceleration_z": 1036 * G,
            "tx_power": 4.0, "battery_voltage": 2.977, "movement_count": 66.0,
        },
    ),
    (
        "df5 maximum values", RUUVI_DOCS_DF5, "057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F", 65534,
        {
            "temperature": 163.835, "humidity": 163.835, "pressure": 115534.0,
            "acceleration_x": 32767 * G, "acceleration_y": 32767 * G, "acceleration_z": 32767 * G,
            "tx_power": 20.0, "battery_voltage": 3.646, "movement_count": 254.0,
        },
    ),
    (
        "df5 minimum values", RUUVI_ISSUE_30, "058001000000008001800180010000000000CBB8334C884F", 0,
        {
            "temperature": -163.835, "humidity": 0.0, "pressure": 50000.0,
            "acceleration_x": -32767 * G, "acceleration_y": -32767 * G, "acceleration_z": -32767 * G,
            "tx_power": -40.0, "battery_voltage": 1.6, "movement_count": 0.0,
        },
    ),
    # Every field "not available": no readings at all, no sequence.
    ("df5 invalid values", RUUVI_DOCS_DF5, "058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF", None, {}),
    (
        "df3 valid data", RUUVI_DOCS_DF3, "03291A1ECE1EFC18F94202CA0B53", None,
        {
            "humidity": 20.5, "temperature": 26.3, "pressure": 102766.0,
            "acceleration_x": -1000 * G, "acceleration_y": -1726 * G, "acceleration_z": 714 * G,
            "battery_voltage": 2.899,
        },
    ),
    (
        "df3 maximum values", RUUVI_DOCS_DF3, "03FF7F63FFFF7FFF7FFF7FFFFFFF", None,
        {
            "humidity": 127.5, "temperature": 127.99, "pressure": 115535.0,
            "acceleration_x": 32767 * G, "acceleration_y": 32767 * G, "acceleration_z": 32767 * G,
            "battery_voltage": 65.535,
        },
    ),
    (
        "df3 minimum values", RUUVI_DOCS_DF3, "0300FF6300008001800180010000", None,
        {
            "humidity": 0.0, "temperature": -127.99, "pressure": 50000.0,
            "acceleration_x": -32767 * G, "acceleration_y": -32767 * G, "acceleration_z": -32767 * G,
            "battery_voltage": 0.0,
        },
    ),
]

BTHOME_FORMAT = "bthome.io/format, Sensor data table (Example / Result columns)"
BTHOME_ISSUE_118 = "github.com/Bluetooth-Devices/bthome-ble issue #118 (maintainer's worked example)"
# The reference parser's own tests, at release 3.20.0 (commit d55bd3aea0808b37ce5fbd8b0a2e2063c15836bf).
BTHOME_BLE_TESTS = "github.com/Bluetooth-Devices/bthome-ble tests/test_parser_v2.py @ d55bd3a"

# (name, source, service data hex after UUID 0xFCD2, packet id, expected readings, unknown id)
# Single-object examples from the format table are prefixed with device information 0x40
# (v2, unencrypted, regular interval).
BTHOME = [
    ("battery", BTHOME_FORMAT, "40" "0161", None, {"battery": 97.0}, None),
    ("temperature", BTHOME_FORMAT, "40" "02CA09", None, {"temperature": 25.06}, None),
    ("humidity", BTHOME_FORMAT, "40" "03BF13", None, {"humidity": 50.55}, None),
    ("humidity uint8", BTHOME_FORMAT, "40" "2E23", None, {"humidity": 35.0}, None),
    ("pressure", BTHOME_FORMAT, "40" "04138A01", None, {"pressure": 100883.0}, None),  # 1008.83 hPa
    ("co2", BTHOME_FORMAT, "40" "12E204", None, {"co2": 1250.0}, None),
    ("pm2.5", BTHOME_FORMAT, "40" "0D120C", None, {"pm2_5": 3090.0}, None),
    ("pm10", BTHOME_FORMAT, "40" "0E021C", None, {"pm10": 7170.0}, None),
    ("tvoc", BTHOME_FORMAT, "40" "133301", None, {"tvoc_mass": 307.0}, None),
    ("dewpoint", BTHOME_FORMAT, "40" "08CA06", None, {"dew_point": 17.38}, None),
    ("illuminance", BTHOME_FORMAT, "40" "05138A14", None, {"illuminance": 13460.67}, None),
    ("voltage", BTHOME_FORMAT, "40" "0C020C", None, {"battery_voltage": 3.074}, None),
    ("distance mm", BTHOME_FORMAT, "40" "400C00", None, {"distance": 0.012}, None),
    ("distance m", BTHOME_FORMAT, "40" "414E00", None, {"distance": 7.8}, None),
    # Objects without a catalog metric are stepped over, the next one still decodes.
    ("count then temp", BTHOME_FORMAT, "40" "0960" "02CA09", None, {"count": 96.0, "temperature": 25.06}, None),
    (
        "packet from a tag", BTHOME_ISSUE_118, "40003f015e02820803ac170c830b", 0x3F,
        {"battery": 94.0, "temperature": 21.78, "humidity": 60.6, "battery_voltage": 2.947},
        None,
    ),
    # An id the table does not know ends parsing: objects before it count, after it are lost.
    ("unknown id stops", BTHOME_FORMAT, "40" "02CA09" "FE0102" "03BF13", None, {"temperature": 25.06}, 0xFE),
    # Device information 0x42: bit 1 set, the tag's MAC A4:C1:38:8D:18:B2 (least significant
    # byte first) precedes the objects. test_bthome_with_mac: pressure 1008.83 hPa.
    ("mac included", BTHOME_BLE_TESTS + " test_bthome_with_mac", "42" "B2188D38C1A4" "04138A01", None,
     {"pressure": 100883.0}, None),
]

# bthome.io/encryption worked example: key, MAC, counter 0x00112233 as transmitted,
# plain objects 02CA09 03BF13 (temperature 25.06, humidity 50.55).
BTHOME_ENCRYPTION_SOURCE = "bthome.io/encryption (worked example)"
BTHOME_KEY = "231d39c1d7cc1ab1aee224cd096db932"
BTHOME_MAC = "5448E68F80A5"
BTHOME_ENCRYPTED = "41a47266c95f730011223378237214"
BTHOME_ENCRYPTED_COUNTER = 0x33221100  # bytes 00 11 22 33, little-endian
BTHOME_ENCRYPTED_VALUES = {"temperature": 25.06, "humidity": 50.55}

# Encrypted with the MAC included (device information 0x43): test_bthome_with_mac_encrypted,
# advertiser 54:48:E6:8F:80:A5, key as above, counter bytes 00 11 22 33; the reference parser
# reports temperature 25.06 and humidity 50.55. The nonce takes the carried MAC.
BTHOME_MAC_ENCRYPTED = "43" "A5808FE64854" "F196C06FFB49" "00112233" "F08ECBDE"
BTHOME_MAC_ENCRYPTED_COUNTER = 0x33221100
BTHOME_MAC_ENCRYPTED_VALUES = {"temperature": 25.06, "humidity": 50.55}

# Counter frames of the reference parser's replay tests (advertiser 54:48:E6:8F:80:A5, key as
# above): (test, service data, counter the test asserts). test_reset_encryption_counter accepts
# 0 after 2^32 - 1. Those tests assert only the counter; the temperature and humidity these
# frames carry are checked as this decoder reads them (every frame authenticates, so the MIC
# vouches for the bytes, not for the values).
BTHOME_COUNTER_FRAMES = {
    "first": ("test_increasing_encryption_counter", "41E445F3C9962B332211006C7C4519", 1122867),
    "next": ("test_increasing_encryption_counter", "413E932CC7175F34221100553876AF", 1122868),
    "older": ("test_decreasing_encryption_counter", "41723D3035FB88322211009E7414C0", 1122866),
    "last before wrap": ("test_reset_encryption_counter", "41BA0DB07AEEF6FFFFFFFF21FD4600", 4294967295),
    "wrapped": ("test_reset_encryption_counter", "41DE40B50E676600000000D7CB95DE", 0),
}

# Encryption downgrade: test_encryption_no_key_needed / test_encryption_downgrade_fails, a plain
# pressure frame (1008.83 hPa) from A4:C1:38:8D:18:B2, accepted without a key and refused when
# the tag has the bind key below.
BTHOME_DOWNGRADE_KEY = "814aac74c4f17b6c1581e1ab87816b99"
BTHOME_DOWNGRADE_MAC = "A4C1388D18B2"
BTHOME_DOWNGRADE_PLAIN = "40" "04138A01"
BTHOME_DOWNGRADE_VALUES = {"pressure": 100883.0}

# pvvx and atc1441 publish field layouts, not example frames. These frames are built by hand
# from the README tables (github.com/pvvx/ATC_MiThermometer "Custom format (all data
# little-endian)"; github.com/atc1441/ATC_MiThermometer "Advertising format of the custom
# firmware") for a tag A4:C1:38:12:34:56 reading 23.45 degC / 45.67 % / 2.985 V / 87 %.
PVVX_SOURCE = "pvvx/ATC_MiThermometer README, custom format table (frame built from it)"
ATC_SOURCE = "atc1441/ATC_MiThermometer README, advertising format table (frame built from it)"
PVVX = [
    (
        "pvvx custom", PVVX_SOURCE,
        "563412" "38C1A4" "2909" "D711" "A90B" "57" "2A" "05", "pvvx", 0x2A,
        {"temperature": 23.45, "humidity": 45.67, "battery_voltage": 2.985, "battery": 87.0},
    ),
    (
        "pvvx negative temperature", PVVX_SOURCE,
        "563412" "38C1A4" "0CFE" "1027" "100E" "64" "FF" "00", "pvvx", 0xFF,
        {"temperature": -5.0, "humidity": 100.0, "battery_voltage": 3.6, "battery": 100.0},
    ),
    (
        "atc1441", ATC_SOURCE,
        "A4C138" "123456" "00EA" "2D" "57" "0BA9" "07", "atc1441", 0x07,
        {"temperature": 23.4, "humidity": 45.0, "battery": 87.0, "battery_voltage": 2.985},
    ),
    (
        "atc1441 negative temperature", ATC_SOURCE,
        "A4C138" "123456" "FFCE" "5A" "0A" "0898" "80", "atc1441", 0x80,
        {"temperature": -5.0, "humidity": 90.0, "battery": 10.0, "battery_voltage": 2.2},
    ),
]

# The reference parser's tests of the rest of the object table (same file and commit as
# BTHOME_BLE_TESTS): (test name, service data hex, expected [(device suffix, metric, value in
# the catalog unit)]). The suffix "/2", "/3" marks a metric repeated in one advertisement
# (the reference's key_2, key_3). Conversions: kWh -> Wh, lb -> kg, mL -> l, m3/h -> l/s,
# uS/cm -> S/m. Timestamp, text, raw and channel are no measurements: no reading.
_LB = 0.45359237
BTHOME_TABLE = [
    ("test_bthome_mass_kilograms", "40065e1f", [("", "mass", 80.3)]),
    ("test_bthome_mass_pounds", "40073e1d", [("", "mass", 74.86 * _LB)]),
    ("test_bthome_count", "400960", [("", "count", 96.0)]),
    ("test_bthome_energy", "400a138a14", [("", "energy", 1346067.0)]),
    ("test_bthome_power", "400b021b00", [("", "power", 69.14)]),
    ("test_bthome_voltage_2", "404a020c", [("", "voltage", 307.4)]),
    ("test_bthome_binary_sensor", "400f01", [("", "generic_boolean", 1.0)]),
    ("test_bthome_binary_sensor_power", "401001", [("", "power_on", 1.0)]),
    ("test_bthome_binary_sensor_opening", "401100", [("", "opening", 0.0)]),
    ("test_bthome_binary_sensor_window", "402d01", [("", "window_open", 1.0)]),
    ("test_bthome_moisture", "4014020c", [("", "soil_moisture", 30.74)]),
    ("test_bthome_event_button_long_press", "403a04", [("", "button_event", "long_press")]),
    ("test_bthome_event_button_hold_press", "403a80", [("", "button_event", "hold_press")]),
    ("test_bthome_event_dimmer_rotate_left_3_steps", "403c0103", [("", "dimmer_steps", -3.0)]),
    ("test_bthome_event_triple_button_device", "403a003a013a03",
     [("", "button_event", "none"), ("/2", "button_event", "press"), ("/3", "button_event", "triple_press")]),
    ("test_bthome_shelly_button", "44002101" "5e3a01", [("", "battery", 94.0), ("", "button_event", "press")]),
    ("test_bthome_double_temperature", "4002ca0902cf09", [("", "temperature", 25.06), ("/2", "temperature", 25.11)]),
    ("test_bthome_rotation", "403f020c", [("", "rotation", 307.4)]),
    ("test_bthome_duration", "40424e3400", [("", "duration", 13.39)]),
    ("test_bthome_current", "40434e34", [("", "current", 13.39)]),
    ("test_bthome_speed", "40444e34", [("", "wind_speed", 133.9)]),
    ("test_bthome_speed_signed", "40624099dfff", [("", "wind_speed", -2.123456)]),
    ("test_bthome_temperature_2", "40451101", [("", "temperature", 27.3)]),
    ("test_bthome_uv_index", "404632", [("", "uv_index", 5.0)]),
    ("test_bthome_volume_liters", "40478756", [("", "volume", 2215.1)]),
    ("test_bthome_volume_milliliters", "4048dc87", [("", "volume", 34.78)]),
    ("test_bthome_volume_flow_rate", "4049dc87", [("", "volume_flow_rate", 34.78 * 1000 / 3600)]),
    ("test_bthome_gas", "404b138a14", [("", "gas_volume", 1346.067)]),
    ("test_bthome_gas_2", "404c41018a01", [("", "gas_volume", 25821.505)]),
    ("test_bthome_energy_2", "404d12138a14", [("", "energy", 344593170.0)]),
    ("test_bthome_volume_liters_2", "404e87562a01", [("", "volume", 19551.879)]),
    ("test_bthome_volume_water", "404f87562a01", [("", "water_volume", 19551.879)]),
    ("test_bthome_timestamp", "44505d396164", []),
    ("test_bthome_acceleration", "44518756", [("", "acceleration", 22.151)]),
    ("test_bthome_acceleration_signed", "40630057d0ff", [("", "acceleration", -3.123456)]),
    ("test_bthome_gyroscope", "44528756", [("", "angular_velocity", 22.151)]),
    ("test_bthome_text", "44530c48656c6c6f20576f726c6421", []),
    ("test_bthome_raw", "44540c48656c6c6f20576f726c6421", []),
    ("test_bthome_volume_storage", "405587562a01", [("", "volume_storage", 19551.879)]),
    ("test_bthome_conductivity", "4056e803", [("", "conductivity", 0.1)]),
    ("test_bthome_temperature_1_byte", "4057ea", [("", "temperature", -22.0)]),
    ("test_bthome_temperature_1_byte_2", "4058ea", [("", "temperature", -7.7)]),
    ("test_bthome_count_signed", "4059ea", [("", "count", -22.0)]),
    ("test_bthome_count_signed_2_bytes", "405aeaea", [("", "count", -5398.0)]),
    ("test_bthome_count_signed_4_bytes", "405bea0234ea", [("", "count", -365690134.0)]),
    ("test_bthome_power_signed", "405c02fbffff", [("", "power", -12.78)]),
    ("test_bthome_current_signed", "405d02ea", [("", "current", -5.63)]),
    ("test_bthome_direction_precipitation", "405e3f755f11d5",
     [("", "wind_direction", 300.15), ("", "precipitation", 5454.5)]),
    ("test_bthome_channel", "406001", []),
    ("test_bthome_revolutions_per_minute", "4061ac0d", [("", "rotational_speed", 3500.0)]),
    ("test_bthome_light_level", "406402", [("", "light_level", 2.0)]),
]
