"""The pybullet task suite; importing it registers the stock tasks with gymnasium (registration.py)."""

from trainer.sim.registration import register_stock_tasks

register_stock_tasks()
