from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("stripe/", include("stripeline.contrib.django.urls")),
    path("access/<str:customer>", views.access, name="access"),
]
