from django.apps import AppConfig


class RatingsConfig(AppConfig):
    name = "webapp.ratings"
    label = "ratings"
    verbose_name = "Ratings"
