"""Recovering what a downtime lost: webhook redelivery, reconciling heads, and store upkeep."""
