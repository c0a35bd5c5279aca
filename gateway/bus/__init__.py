"""Bus interface. Concrete adapters are imported only by ``gateway.app`` and tests."""

from gateway.bus.base import Appended, Bus, BusStatistics

__all__ = ["Appended", "Bus", "BusStatistics"]
