from django.apps import AppConfig


class DemoAppConfig(AppConfig):
    name = "demo_app"
    verbose_name = "Demo"
    default_auto_field = "django.db.models.BigAutoField"
