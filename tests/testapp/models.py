from django.db import models


class Note(models.Model):
    """A row that jobs write, to show jobs and transactions working together."""

    text = models.CharField(max_length=200)
