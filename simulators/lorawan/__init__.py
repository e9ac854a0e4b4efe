"""Virtual LoRaWAN sensors, packet forwarders (Semtech UDP) and a network-server publisher."""

from simulators.lorawan.forwarder import VirtualForwarder
from simulators.lorawan.publisher import NetworkServerPublisher
from simulators.lorawan.sensors import FAMILIES, VirtualSensor, make_fleet

__all__ = ["FAMILIES", "NetworkServerPublisher", "VirtualForwarder", "VirtualSensor", "make_fleet"]
