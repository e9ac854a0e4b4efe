"""Published example frames, each with its source. Data only: the tests iterate over them."""

from __future__ import annotations

# --- Modbus RTU CRC-16 -----------------------------------------------------------------------
# (frame without CRC, CRC value, source)
MODBUS_CRC = [
    (
        bytes.fromhex("0207"),
        0x1241,
        "MODBUS over Serial Line Specification and Implementation Guide V1.02, section 6.2.2 "
        "(CRC generation example: address 0x02, function 0x07 -> CRC 0x1241, sent 41 12)",
    ),
    (
        b"123456789",
        0x4B37,
        "Catalogue of parametrised CRC algorithms (reveng), CRC-16/MODBUS check value",
    ),
]

# --- SDS011 -----------------------------------------------------------------------------------
# Nova Fitness "Laser Dust Sensor Control Protocol V1.3" (2015-07-20), section 3 examples,
# sensor with device ID A160.
SDS011_SOURCE = "Nova Fitness SDS011 Laser Dust Sensor Control Protocol V1.3, section 3"
SDS011_COMMANDS = [
    # (description, frame as sent by the host, builder name, builder args)
    (
        "query data, all sensors (3.2)",
        bytes.fromhex("AAB404000000000000000000000000FFFF02AB"),
        "query_data",
        (),
    ),
    (
        "set reporting mode to query, all sensors (3.1)",
        bytes.fromhex("AAB402010100000000000000000000FFFF02AB"),
        "set_reporting_mode",
        (True,),
    ),
    (
        "query data, sensor A160 (3.2)",
        bytes.fromhex("AAB404000000000000000000000000A16005AB"),
        "query_data",
        (0xA160,),
    ),
]
# (description, frame from the sensor, expected decode)
SDS011_FRAMES = [
    (
        "data reply of sensor A160: PM2.5 0x04D4 = 123.6, PM10 0x0A3A = 261.8 ug/m3 (3.2)",
        bytes.fromhex("AAC0D4043A0AA1601DAB"),
        ("data", 0xA160, 123.6, 261.8),
    ),
    (
        "reply of sensor A160 to set reporting mode to query (3.1)",
        bytes.fromhex("AAC5020101 00A16005AB".replace(" ", "")),
        ("reply", 0xA160, 2, bytes.fromhex("010100")),
    ),
]

# --- Vaisala WXT5xx ---------------------------------------------------------------------------
WXT_SOURCE_520 = "Vaisala WXT520 User's Guide M210906EN-C, chapter 7"
WXT_SOURCE_530 = "Vaisala WXT530 Series User Guide M211840EN-D, section 8.1.5"
# (line, source, expected address, expected {metric: value in catalog unit}, invalid fields,
#  field problems)
WXT_MESSAGES = [
    (
        b"0R0,Dx=005D,Sx=2.8M,Ta=23.0C,Ua=30.0P,Pa=1028.2H,Hd=0.00M,Rd=10s,Th=23.6C\r\n",
        WXT_SOURCE_520 + ", automatic composite data message (aR0)",
        "0",
        {
            "wind_direction_max": 5.0,
            "wind_speed_max": 2.8,
            "temperature": 23.0,
            "humidity": 30.0,
            "pressure": 102820.0,
            "rain_duration": 10.0,
            "heating_temperature": 23.6,
        },
        0,
        # The guide prints Hd=0.00M (hail duration with unit M) here, but Hd takes the unit
        # `s`: that one field is reported as an unknown unit, the others still count.
        ["unknown_unit"],
    ),
    (
        b"0R0,Dx=009D,Sx=0.2M,Ta=23.3C,Ua=37.5P,Pa=996.8H,Rc=0.000I,Vs=12.0V,Vh=0.0N\r\n",
        WXT_SOURCE_530 + ", composite data message query example",
        "0",
        {
            "wind_direction_max": 9.0,
            "wind_speed_max": 0.2,
            "temperature": 23.3,
            "humidity": 37.5,
            "pressure": 99680.0,
            "rain_total": 0.0,
            "supply_voltage": 12.0,
            "heating_voltage": 0.0,  # N: heating off
        },
        0,
        [],
    ),
    (
        b"0R2,Ta=74.6F,Ua=14.7P,Pa=1012.9H\r\n",
        WXT_SOURCE_520 + ", combined data message (aR) PTU part",
        "0",
        {"temperature": (74.6 - 32) * 5 / 9, "humidity": 14.7, "pressure": 101290.0},
        0,
        [],
    ),
    (
        b"0R3,Rc=0.10M,Rd=2380s,Ri=0.0M,Hc=0.0M,Hd=0s,Hi=0.0M\r\n",
        WXT_SOURCE_520 + ", combined data message (aR) precipitation part",
        "0",
        {
            "rain_total": 0.10,
            "rain_duration": 2380.0,
            "rain_intensity": 0.0,
            "hail_total": 0.0,
            "hail_duration": 0.0,
            "hail_intensity": 0.0,
        },
        0,
        [],
    ),
    (
        b"0R5,Th=76.1F,Vh=11.5N,Vs=11.5V,Vr=3.510V\r\n",
        WXT_SOURCE_520 + ", combined data message (aR) supervisor part",
        "0",
        {
            "heating_temperature": (76.1 - 32) * 5 / 9,
            "heating_voltage": 11.5,
            "supply_voltage": 11.5,
            "reference_voltage": 3.510,
        },
        0,
        [],
    ),
    (
        b"0r1,Sn=0.1M,Sm=0.1M,Sx=0.1MGOG\r\n",
        WXT_SOURCE_520 + ", automatic mode example with CRC",
        "0",
        {"wind_speed_min": 0.1, "wind_speed": 0.1, "wind_speed_max": 0.1},
        0,
        [],
    ),
    (
        b"0r2,Ta=22.7C,Ua=55.5P,Pa=1004.7H@Fn\r\n",
        WXT_SOURCE_520 + ", automatic mode example with CRC",
        "0",
        {"temperature": 22.7, "humidity": 55.5, "pressure": 100470.0},
        0,
        [],
    ),
    (
        b"0r5,Th=25.0C,Vh=10.6#,Vs=10.8V,Vr=3.369VO]T\r\n",
        WXT_SOURCE_520 + ", automatic mode example with CRC (Vh carries the # marker)",
        "0",
        {"heating_temperature": 25.0, "supply_voltage": 10.8, "reference_voltage": 3.369},
        1,  # Vh carries the invalid marker
        [],
    ),
]
# The query examples of each message kind, Vaisala WXT530 Series User Guide M211840EN-D,
# sections 7.2.4-7.2.7 (as printed: a space before Sx in 7.2.4). Every measurement is forwarded;
# Id (text) is not a measurement: a known field, skipped (listed in wxt.SKIPPED).
WXT530_QUERY_MESSAGES = [
    (
        b"0R1,Dn=236D,Dm=283D,Dx=031D,Sn=0.0M,Sm=1.0M, Sx=2.2M\r\n",
        "Vaisala WXT530 Series User Guide M211840EN-D, 7.2.4 Wind Data Message (aR1)",
        {
            "wind_direction_min": 236.0,
            "wind_direction": 283.0,
            "wind_direction_max": 31.0,
            "wind_speed_min": 0.0,
            "wind_speed": 1.0,
            "wind_speed_max": 2.2,
        },
        [],
    ),
    (
        b"0R2,Ta=23.6C,Ua=14.2P,Pa=1026.6H\r\n",
        "Vaisala WXT530 Series User Guide M211840EN-D, 7.2.5 Pressure, Temperature and "
        "Humidity Data Message (aR2)",
        {"temperature": 23.6, "humidity": 14.2, "pressure": 102660.0},
        [],
    ),
    (
        b"0R3,Rc=0.0M,Rd=0s,Ri=0.0M,Hc=0.0M,Hd=0s,Hi=0.0M,Rp=0.0M,Hp=0.0M\r\n",
        "Vaisala WXT530 Series User Guide M211840EN-D, 7.2.6 Precipitation Data Message (aR3)",
        {
            "rain_total": 0.0,
            "rain_duration": 0.0,
            "rain_intensity": 0.0,
            "hail_total": 0.0,
            "hail_duration": 0.0,
            "hail_intensity": 0.0,
            "rain_intensity_peak": 0.0,
            "hail_intensity_peak": 0.0,
        },
        [],
    ),
    (
        b"0R5,Th=25.9C,Vh=12.0N,Vs=15.2V,Vr=3.475V,Id=HEL___\r\n",
        "Vaisala WXT530 Series User Guide M211840EN-D, 7.2.7 Supervisor Data Message (aR5)",
        {
            "heating_temperature": 25.9,
            "heating_voltage": 12.0,  # N: heating off
            "supply_voltage": 15.2,
            "reference_voltage": 3.475,
        },
        ["Id"],
    ),
]
# Published CRC examples (WXT520 user's guide, automatic mode "Example (with CRC)").
WXT_CRC = [
    (b"0r1,Sn=0.1M,Sm=0.1M,Sx=0.1M", "GOG"),
    (b"0r2,Ta=22.7C,Ua=55.5P,Pa=1004.7H", "@Fn"),
    (b"0r3,Rc=0.00M,Rd=0s,Ri=0.0M", "Ilm"),
    (b"0r5,Th=25.0C,Vh=10.6#,Vs=10.8V,Vr=3.369V", "O]T"),
]
