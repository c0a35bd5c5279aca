"""Store interface. Concrete adapters are imported only by ``gateway.app`` and tests."""

from gateway.store.base import MessageStore, StoreStatistics

__all__ = ["MessageStore", "StoreStatistics"]
