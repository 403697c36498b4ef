"""Training jobs that close the loop: preference datasets, the Bradley-Terry reward
model, REINFORCE with a KL term toward the reference policy, and SFT (see DESIGN.md,
Training).

Like `model_service`, this package never imports Django; `training/tasks.py` will be the
Celery edge.
"""
