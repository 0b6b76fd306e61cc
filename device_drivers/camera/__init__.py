"""Cameras (OpenCV): USB (UVC) cameras, RTSP/HTTP streams and video files; motion, tamper, footfall, stills."""
